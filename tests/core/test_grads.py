"""Per-sample gradients and forward outputs of (masked) ensemble members."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from raytda.core.grads import forward_outputs, n_params, per_sample_grads
from raytda.core.masks import MaskSpec, fixed_masks, sample_masks
from raytda.core.outputs import margin, one_minus_p

FIXED = MaskSpec(seed=4, rate=0.3)
PER_SAMPLE = MaskSpec(seed=4, rate=0.3, mode="per-sample")


def all_grads(model: nn.Module, x, y, mask, split="train", batch_size=256) -> torch.Tensor:
    return torch.cat([g for _, g in per_sample_grads(model, x, y, mask, split, batch_size)])


def loop_grads(model: nn.Module, x, y, mask: MaskSpec | None, split="train") -> torch.Tensor:
    """One autograd call per sample, with that sample's masks built explicitly."""
    params = list(model.parameters())
    rows = []
    for i in range(x.shape[0]):
        if mask is None:
            masks = None
        elif mask.mode == "fixed":
            masks = fixed_masks(mask, model.mask_sizes)
        else:
            masks = sample_masks(mask, model.mask_sizes, split, torch.tensor([i]))
        logp = torch.log_softmax(model(x[i:i + 1], masks=masks)[0], dim=0)
        f = logp[y[i]] - torch.logsumexp(torch.cat([logp[:y[i]], logp[y[i] + 1:]]), 0)
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(f, params)]))
    return torch.stack(rows)


@pytest.mark.parametrize("mask", [None, FIXED, PER_SAMPLE], ids=["none", "fixed", "per-sample"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_per_sample_grads_match_autograd_loop(toy_model, toy_data, mask, split):
    x, y = (toy_data.x_train, toy_data.y_train) if split == "train" else (toy_data.x_test,
                                                                          toy_data.y_test)
    x, y = x[:20], y[:20]
    got = all_grads(toy_model, x, y, mask, split, batch_size=5)
    assert got.shape == (x.shape[0], n_params(toy_model))
    torch.testing.assert_close(got, loop_grads(toy_model, x, y, mask, split),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mask", [FIXED, PER_SAMPLE], ids=["fixed", "per-sample"])
def test_grad_of_a_sample_does_not_depend_on_batching(toy_model, toy_data, mask):
    x, y = toy_data.x_train, toy_data.y_train
    ref = all_grads(toy_model, x, y, mask, batch_size=x.shape[0])
    for bs in (1, 7, 32):
        torch.testing.assert_close(all_grads(toy_model, x, y, mask, batch_size=bs), ref,
                                   rtol=1e-5, atol=1e-6)


def test_fixed_mask_grad_does_not_depend_on_sample_order(toy_model, toy_data):
    x, y = toy_data.x_train, toy_data.y_train
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
    ref = all_grads(toy_model, x, y, FIXED, batch_size=16)
    shuffled = all_grads(toy_model, x[perm], y[perm], FIXED, batch_size=9)
    torch.testing.assert_close(shuffled, ref[perm], rtol=1e-5, atol=1e-6)


def test_fixed_mask_is_one_subnetwork_for_all_samples(toy_model, toy_data):
    """A dropped hidden unit gets no gradient on its incoming weights from any sample."""
    g = all_grads(toy_model, toy_data.x_train, toy_data.y_train, FIXED)
    m0 = fixed_masks(FIXED, toy_model.mask_sizes)[0]
    w = toy_model.module.hidden[0].weight  # first parameter: rows of the first hidden layer
    w_grads = g[:, : w.numel()].reshape(-1, *w.shape)
    assert (m0 == 0).any() and (m0 == 1).any()
    assert w_grads[:, m0 == 0].abs().max() == 0
    assert w_grads[:, m0 == 1].abs().max() > 0


def test_masks_change_the_gradient(toy_model, toy_data):
    x, y = toy_data.x_train[:10], toy_data.y_train[:10]
    plain = all_grads(toy_model, x, y, None)
    other = all_grads(toy_model, x, y, MaskSpec(seed=5, rate=0.3))
    assert not torch.allclose(plain, all_grads(toy_model, x, y, FIXED), rtol=1e-2)
    assert not torch.allclose(other, all_grads(toy_model, x, y, FIXED), rtol=1e-2)


@pytest.mark.parametrize("mask", [None, FIXED, PER_SAMPLE], ids=["none", "fixed", "per-sample"])
def test_forward_outputs_match_direct_forward(toy_model, toy_data, mask):
    x, y = toy_data.x_train, toy_data.y_train
    margins, q = forward_outputs(toy_model, x, y, mask, "train", batch_size=11)
    if mask is None:
        masks = None
    elif mask.mode == "fixed":
        masks = fixed_masks(mask, toy_model.mask_sizes)
    else:
        masks = sample_masks(mask, toy_model.mask_sizes, "train", torch.arange(x.shape[0]))
    with torch.no_grad():
        logits = toy_model(x, masks=masks)
    torch.testing.assert_close(margins, margin(logits, y))
    torch.testing.assert_close(q, one_minus_p(logits, y))


def test_forward_outputs_without_mask_disable_dropout(toy_data):
    """An unmasked member is the plain model: nn.Dropout must be off even in train mode."""
    from raytda.core.network import Network
    from raytda.tasks import get_task

    torch.manual_seed(0)
    model = Network(get_task("toy-mlp", dropout=0.5).build_model(), toy_data.x_train[:1])
    a = forward_outputs(model, toy_data.x_test, toy_data.y_test)[0]
    model.train()
    b = forward_outputs(model, toy_data.x_test, toy_data.y_test)[0]
    torch.testing.assert_close(a, b, rtol=0, atol=0)
