"""Dropout masks: fixed sub-networks and per-sample masks keyed by sample index."""

from __future__ import annotations

import pytest
import torch

from raytda.core.masks import MaskSpec, fixed_masks, masks_for, sample_masks

SIZES = (16, 16)


def test_fixed_masks_reproducible_and_binary():
    a = fixed_masks(MaskSpec(seed=3, rate=0.3), SIZES)
    b = fixed_masks(MaskSpec(seed=3, rate=0.3), SIZES)
    assert [m.shape for m in a] == [(16,), (16,)]
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
        assert set(x.unique().tolist()) <= {0.0, 1.0}


def test_fixed_masks_differ_between_seeds():
    a = torch.cat(fixed_masks(MaskSpec(seed=0, rate=0.5), (256,)))
    b = torch.cat(fixed_masks(MaskSpec(seed=1, rate=0.5), (256,)))
    assert not torch.equal(a, b)
    # Two independent rate-0.5 masks agree on about half the units, not on nearly all.
    assert 0.3 < float((a == b).float().mean()) < 0.7


def test_fixed_masks_differ_between_sites():
    """Each dropout site gets its own draw (a common bug is reusing one vector)."""
    m0, m1 = fixed_masks(MaskSpec(seed=5, rate=0.5), (128, 128))
    assert not torch.equal(m0, m1)


@pytest.mark.parametrize("rate", [0.1, 0.5])
@pytest.mark.parametrize("mode", ["fixed", "per-sample"])
def test_dropout_rate_respected(rate, mode):
    spec = MaskSpec(seed=7, rate=rate, mode=mode)
    if mode == "fixed":
        masks = fixed_masks(spec, (20000,))
    else:
        masks = sample_masks(spec, (200,), "train", torch.arange(100))  # 20000 draws
    dropped = 1.0 - float(masks[0].mean())
    assert abs(dropped - rate) < 0.02


def test_zero_rate_keeps_every_unit():
    assert all(bool(m.all()) for m in fixed_masks(MaskSpec(seed=1, rate=0.0), SIZES))


def test_sample_masks_keyed_by_index_not_batch_position():
    spec = MaskSpec(seed=9, rate=0.5, mode="per-sample")
    full = sample_masks(spec, SIZES, "train", torch.arange(10))
    some = sample_masks(spec, SIZES, "train", torch.tensor([7, 2, 5]))
    for f, s in zip(full, some, strict=True):
        assert s.shape == (3, 16)
        assert torch.equal(s, f[[7, 2, 5]])


def test_sample_masks_vary_across_samples_and_splits():
    spec = MaskSpec(seed=9, rate=0.5, mode="per-sample")
    tr = sample_masks(spec, (64,), "train", torch.arange(4))[0]
    te = sample_masks(spec, (64,), "test", torch.arange(4))[0]
    assert not torch.equal(tr[0], tr[1])  # a new mask per sample
    assert not torch.equal(tr, te)  # test sample 0 is not train sample 0


def test_masks_for_dispatch():
    idx = torch.arange(5)
    assert masks_for(None, SIZES, "train", idx) == (None, False)
    fixed, batched = masks_for(MaskSpec(1, 0.2), SIZES, "train", idx)
    assert not batched and fixed[0].shape == (16,)
    per, batched = masks_for(MaskSpec(1, 0.2, "per-sample"), SIZES, "train", idx)
    assert batched and per[0].shape == (5, 16)
