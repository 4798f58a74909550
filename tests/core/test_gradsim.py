"""Grad-Dot and Grad-Cos."""

from __future__ import annotations

import pytest
import torch

from raytda.core.args import ComputeArgs
from raytda.core.grads import per_sample_grads
from raytda.core.gradsim import similarity_block
from raytda.core.masks import MaskSpec
from raytda.core.outputs import CLASSIFICATION
from raytda.data import Dataset
from raytda.features import features_from

ARGS = ComputeArgs(grad_batch=13)
MASKS = [None, MaskSpec(seed=2, rate=0.2), MaskSpec(seed=2, rate=0.2, mode="per-sample")]
IDS = ["none", "fixed", "per-sample"]


def gradsim_block(model, data, mask, normalize, args, output=CLASSIFICATION):
    """Grad-Dot/Cos of a member as the method computes it: exact dense features."""
    fz = features_from("dense").featurizer(model, None, 0, args, output)
    test = fz.features(data.test, mask, "test")
    return similarity_block(test, fz.batches(data.train, mask, "train"), data.n_train, normalize)


def grads(model, x, y, mask, split) -> torch.Tensor:
    return torch.cat([g for _, g in per_sample_grads(model, x, y, mask, split, 1000)]).double()


@pytest.mark.parametrize("mask", MASKS, ids=IDS)
def test_grad_dot_is_gradient_inner_product(toy_model, toy_data, mask):
    dot = gradsim_block(toy_model, toy_data, mask, False, ARGS)
    g_tr = grads(toy_model, toy_data.x_train, toy_data.y_train, mask, "train")
    g_te = grads(toy_model, toy_data.x_test, toy_data.y_test, mask, "test")
    assert dot.shape == (toy_data.n_test, toy_data.n_train)
    torch.testing.assert_close(dot.double(), g_te @ g_tr.T, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("mask", MASKS, ids=IDS)
def test_grad_cos_is_grad_dot_of_unit_gradients(toy_model, toy_data, mask):
    cos = gradsim_block(toy_model, toy_data, mask, True, ARGS).double()
    dot = gradsim_block(toy_model, toy_data, mask, False, ARGS).double()
    n_tr = grads(toy_model, toy_data.x_train, toy_data.y_train, mask, "train").norm(dim=1)
    n_te = grads(toy_model, toy_data.x_test, toy_data.y_test, mask, "test").norm(dim=1)
    torch.testing.assert_close(cos, dot / n_te[:, None] / n_tr[None, :], rtol=1e-4, atol=1e-6)
    assert cos.abs().max() <= 1.0 + 1e-6
    # Not degenerate: both signs occur and values spread over the interval.
    assert cos.min() < -0.1 and cos.max() > 0.1


def test_grad_cos_of_a_sample_with_itself_is_one(toy_model, toy_data):
    n = 6
    same = Dataset(toy_data.x_train, toy_data.y_train, toy_data.x_train[:n], toy_data.y_train[:n])
    cos = gradsim_block(toy_model, same, MaskSpec(seed=1, rate=0.2), True, ARGS)
    torch.testing.assert_close(cos[:, :n].diagonal(), torch.ones(n), rtol=0, atol=1e-5)
    assert (cos.abs() <= 1.0 + 1e-6).all()


def test_grad_cos_is_invariant_to_gradient_scale(toy_model, toy_data):
    """Scaling the head scales every margin gradient differently; cosine must stay bounded
    while dot products change, i.e. normalization really happens per sample."""
    dot = gradsim_block(toy_model, toy_data, None, False, ARGS)
    cos = gradsim_block(toy_model, toy_data, None, True, ARGS)
    assert dot.abs().max() > 2.0  # raw products are far outside [-1, 1] here
    assert cos.abs().max() <= 1.0 + 1e-6
