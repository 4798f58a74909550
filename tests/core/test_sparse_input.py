"""The zero-input projection path gives the dense path's features, with less work."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

from raytda.core.args import ComputeArgs
from raytda.core.grads import n_params, per_sample_grads
from raytda.core.masks import MaskSpec, fixed_masks, sample_masks
from raytda.core.network import Network
from raytda.core.outputs import margin
from raytda.core.projection import GaussianProjector
from raytda.core.sparse_input import SparseInputProjection, background
from raytda.data import Dataset
from raytda.methods.trak import trak_block
from raytda.tasks import get_task

K = 16


def sparse_like(x: torch.Tensor, seed: int) -> torch.Tensor:
    """x with most entries set to exactly 0; feature j survives with probability ~(1-j/d)^2."""
    gen = torch.Generator().manual_seed(seed)
    keep = torch.linspace(1.0, 0.0, x.shape[1]) ** 2
    return x * (torch.rand(x.shape, generator=gen) < keep)


@pytest.fixture(scope="module")
def sparse_data(toy_data: Dataset) -> Dataset:
    return dataclasses.replace(toy_data, x_train=sparse_like(toy_data.x_train, 0),
                               x_test=sparse_like(toy_data.x_test, 1))


def explicit_features(model: nn.Module, x: torch.Tensor, y: torch.Tensor, P: torch.Tensor,
                      mask: MaskSpec | None, split: str) -> torch.Tensor:
    """One autograd call per sample, flattened gradient times the explicit P, in float64."""
    rows = []
    for i in range(x.shape[0]):
        masks = None
        if mask is not None and mask.mode == "fixed":
            masks = tuple(m.unsqueeze(0) for m in fixed_masks(mask, model.mask_sizes))
        elif mask is not None:
            masks = sample_masks(mask, model.mask_sizes, split, torch.tensor([i]))
        f = margin(model(x[i:i + 1], masks=masks), y[i:i + 1])[0]
        g = torch.autograd.grad(f, list(model.parameters()))
        rows.append(torch.cat([t.reshape(-1) for t in g]).double())
    return torch.stack(rows) @ P.double()


@pytest.mark.parametrize("mask", [None, MaskSpec(seed=5, rate=0.1),
                                  MaskSpec(seed=5, rate=0.1, mode="per-sample")],
                         ids=["no-mask", "fixed", "per-sample"])
def test_features_equal_explicit_gradients_times_p(toy_model, sparse_data, mask):
    proj = GaussianProjector(n_params(toy_model), K, seed=2)
    sparse = SparseInputProjection.build(toy_model, proj, sparse_data.x_train, batch_size=7)
    assert sparse is not None
    for x, y, split in ((sparse_data.x_train, sparse_data.y_train, "train"),
                        (sparse_data.x_test, sparse_data.y_test, "test")):
        got = sparse.features(toy_model, x, y, mask, split, batch_size=7)
        ref = explicit_features(toy_model, x, y, proj.matrix(), mask, split)
        assert float((got.double() - ref).abs().max() / ref.abs().max()) < 1e-5
    # It must really skip work: fewer multiply-adds than the dense product.
    n = sparse_data.n_train + sparse_data.n_test
    assert sparse.flops < 0.9 * 2.0 * n * n_params(toy_model) * K


def test_trak_block_is_the_same_with_and_without_the_sparse_path(toy_model, sparse_data):
    mask = MaskSpec(seed=9, rate=0.1)
    blocks = [trak_block(toy_model, sparse_data, GaussianProjector(n_params(toy_model), K, 4),
                         mask, None, ComputeArgs(grad_batch=5, sparse_inputs=on), pack=False)[0]
              for on in (True, False)]
    assert float((blocks[0] - blocks[1]).abs().max() / blocks[1].abs().max()) < 1e-5


def test_not_used_where_it_cannot_pay_or_apply(toy_model, toy_data, sparse_data):
    proj = GaussianProjector(n_params(toy_model), K, seed=2)
    # Dense inputs: nothing to skip.
    assert SparseInputProjection.build(toy_model, proj, toy_data.x_train, 7) is None
    # P not resident (streamed under a small budget): the grouped P would exceed it.
    small = GaussianProjector(100_000, K, seed=2, memory_bytes=4096 * K * 4)
    assert not small.resident
    assert SparseInputProjection.build(toy_model, small, sparse_data.x_train, 7) is None
    # Training mode: the fast path does not apply (nn.Dropout would draw its own masks).
    toy_model.train()
    try:
        assert SparseInputProjection.build(toy_model, proj, sparse_data.x_train, 7) is None
    finally:
        toy_model.eval()


def test_grouped_matrix_is_a_row_permutation_of_p():
    proj = GaussianProjector(9000, 8, seed=1)
    order = torch.randperm(9000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(proj.matrix(order), proj.matrix()[order])
    with pytest.raises(ValueError, match="permutation of 9000 rows"):
        proj.matrix(order[:10])


# ----------------------------------------------------------------------------- normalized

SHARED_MNIST = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mnist"
MASKS = [None, MaskSpec(seed=5, rate=0.1), MaskSpec(seed=5, rate=0.1, mode="per-sample")]
MASK_IDS = ["no-mask", "fixed", "per-sample"]


def dense_features(model: nn.Module, x: torch.Tensor, y: torch.Tensor, proj: GaussianProjector,
                   mask: MaskSpec | None, split: str) -> torch.Tensor:
    """The dense path: full per-sample gradients times the whole P."""
    return torch.cat([proj.project(g) for _, g in
                      per_sample_grads(model, x, y, mask, split, batch_size=64)])


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got.double() - ref.double()).abs().max() / ref.double().abs().max())


@pytest.fixture(scope="module")
def normalized_data(sparse_data: Dataset) -> Dataset:
    """The sparse toy data normalized like torchvision: background 0 becomes -0.3 / 0.7."""
    return dataclasses.replace(sparse_data, x_train=(sparse_data.x_train - 0.3) / 0.7,
                               x_test=(sparse_data.x_test - 0.3) / 0.7)


def test_background_is_each_features_most_frequent_value(normalized_data):
    v = background(normalized_data.x_train)
    # Feature 0 is never at the background (all values distinct): zero wins the tie.
    assert v[0] == 0
    assert torch.allclose(v[1:], torch.full_like(v[1:], -0.3 / 0.7))


@pytest.mark.parametrize("mask", MASKS, ids=MASK_IDS)
def test_normalized_inputs_equal_explicit_gradients_times_p(toy_model, normalized_data, mask):
    proj = GaussianProjector(n_params(toy_model), K, seed=2)
    sparse = SparseInputProjection.build(toy_model, proj, normalized_data.x_train, batch_size=7)
    assert sparse is not None and sparse.n_bg == toy_model.module.hidden[0].out_features
    for x, y, split in ((normalized_data.x_train, normalized_data.y_train, "train"),
                        (normalized_data.x_test, normalized_data.y_test, "test")):
        got = sparse.features(toy_model, x, y, mask, split, batch_size=7)
        assert rel_err(got, explicit_features(toy_model, x, y, proj.matrix(), mask, split)) < 1e-5
        assert rel_err(got, dense_features(toy_model, x, y, proj, mask, split)) < 1e-5
    n = normalized_data.n_train + normalized_data.n_test
    assert sparse.flops < 0.9 * 2.0 * n * n_params(toy_model) * K


def test_zero_background_keeps_the_plain_layout(toy_model, sparse_data):
    proj = GaussianProjector(n_params(toy_model), K, seed=2)
    sparse = SparseInputProjection.build(toy_model, proj, sparse_data.x_train, batch_size=7)
    assert sparse.n_bg == 0 and sparse.p_grouped.shape[0] == n_params(toy_model)


@pytest.mark.data
@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason=f"no shared MNIST at {SHARED_MNIST}")
@pytest.mark.parametrize("mask", MASKS[1:], ids=MASK_IDS[1:])
def test_real_normalized_mnist_rows_equal_the_dense_path(mask):
    task = get_task("mnist-mlp", data_dir=str(SHARED_MNIST), n_train=300, n_test=40)
    (x, y), (xt, yt) = task.load()
    data = Dataset(x, y, xt, yt)
    torch.manual_seed(0)
    net = Network(task.build_model(), data.x_train[:1]).eval()
    proj = GaussianProjector(n_params(net), K, seed=3)
    sparse = SparseInputProjection.build(net, proj, data.x_train, batch_size=64)
    assert sparse is not None and sparse.n_bg > 0
    assert torch.allclose(sparse.v.min(), torch.tensor((0 - 0.1307) / 0.3081))
    for x, y, split in ((data.x_train, data.y_train, "train"), (data.x_test, data.y_test, "test")):
        got = sparse.features(net, x, y, mask, split, batch_size=64)
        assert rel_err(got, dense_features(net, x, y, proj, mask, split)) < 1e-5
    assert sparse.flops < 0.8 * 2.0 * (data.n_train + data.n_test) * n_params(net) * K
