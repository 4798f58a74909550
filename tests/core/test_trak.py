"""TRAK (eq. 2) against a brute-force reference built from first principles."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from raytda.core.args import ComputeArgs
from raytda.core.grads import forward_outputs, n_params
from raytda.core.masks import MaskSpec, fixed_masks, sample_masks
from raytda.core.projection import GaussianProjector
from raytda.core.trak import (
    gram_side,
    kernel_solve,
    pack_features,
    round_features,
    score_rows,
    score_rows_gram,
    train_side,
    trak_scores,
    unpack_features,
    uses_gram,
)
from raytda.data import Dataset
from raytda.methods.trak import trak_block

K = 16  # n_train = 60 > K, so the kernel is invertible and no ridge is involved
RATE = 0.1


def explicit_masks(mask: MaskSpec | None, model: nn.Module, split: str, i: int):
    """The (1, width) masks sample i of ``split`` sees under ``mask`` (None: no dropout)."""
    if mask is None:
        return None
    if mask.mode == "fixed":
        return tuple(m.unsqueeze(0) for m in fixed_masks(mask, model.mask_sizes))
    return sample_masks(mask, model.mask_sizes, split, torch.tensor([i]))


def brute_grads_and_q(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      mask: MaskSpec | None, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample gradients of log(p_y / (1 - p_y)), one autograd call per sample, and 1 - p_y."""
    params = list(model.parameters())
    grads, qs = [], []
    for i in range(x.shape[0]):
        logits = model(x[i:i + 1], masks=explicit_masks(mask, model, split, i))[0]
        # log p_y and log(1 - p_y) from log-probabilities: trained toy models reach
        # 1 - p_y ~ 1e-15, where 1 - softmax(...)[y] would lose every digit.
        logp = torch.log_softmax(logits.double(), dim=0)
        others = torch.cat([logp[:y[i]], logp[y[i] + 1:]])
        log_q = torch.logsumexp(others, dim=0)
        g = torch.autograd.grad(logp[y[i]] - log_q, params)
        grads.append(torch.cat([t.reshape(-1) for t in g]).double())
        qs.append(log_q.detach().exp())
    return torch.stack(grads), torch.stack(qs)


def brute_block(model: nn.Module, data: Dataset, proj_seed: int,
                mask: MaskSpec | None) -> torch.Tensor:
    """phi (Phi^T Phi)^-1 Phi^T with an explicit float64 inverse."""
    P = GaussianProjector(n_params(model), K, proj_seed).matrix().double()
    g_tr, _ = brute_grads_and_q(model, data.x_train, data.y_train, mask, "train")
    g_te, _ = brute_grads_and_q(model, data.x_test, data.y_test, mask, "test")
    Phi, phi = g_tr @ P, g_te @ P
    return phi @ torch.linalg.inv(Phi.T @ Phi) @ Phi.T


def max_rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got.double() - ref).abs().max() / ref.abs().max())


ARGS = ComputeArgs(grad_batch=7)  # a batch size that does not divide n: exercises ragged tails


def test_trak_dropout_ensemble_matches_brute_force_eq2(toy_models, toy_data):
    """Mean over members with distinct projection seeds, models and masks (fixed and
    per-sample) equals mean(Q) * mean(phi (Phi^T Phi)^-1 Phi^T) computed explicitly."""
    members = [
        (toy_models[0], 0, MaskSpec(seed=11, rate=RATE)),
        (toy_models[0], 1, MaskSpec(seed=12, rate=RATE)),
        (toy_models[1], 2, MaskSpec(seed=13, rate=RATE, mode="per-sample")),
    ]
    qs, blocks, ref_qs, ref_blocks = [], [], [], []
    for model, seed, mask in members:
        proj = GaussianProjector(n_params(model), K, seed)
        # pack=False: the math against float64 references, without float16 storage
        block, info = trak_block(model, toy_data, proj, mask, None, ARGS, pack=False)
        assert info["ridge"] == 0.0  # n > k: no ridge may be added silently
        blocks.append(block)
        qs.append(forward_outputs(model, toy_data.x_train, toy_data.y_train, mask, "train")[1])
        ref_blocks.append(brute_block(model, toy_data, seed, mask))
        ref_qs.append(brute_grads_and_q(model, toy_data.x_train, toy_data.y_train,
                                        mask, "train")[1])
    got = trak_scores(qs, blocks)
    ref = torch.stack(ref_qs).mean(0)[None, :] * torch.stack(ref_blocks).mean(0)
    assert got.shape == (toy_data.n_test, toy_data.n_train)
    assert max_rel_err(got, ref) < 1e-5
    # Different masks and seeds must really give different members, or the mean is trivial.
    assert max_rel_err(blocks[1], ref_blocks[0]) > 1e-2


def test_trak_dropout_forward_uses_unmasked_features_and_masked_q(toy_models, toy_data):
    """Forward-only variant: blocks from the I unmasked models, Q over I*D masked variants."""
    D = 2
    blocks, qs, ref_blocks, ref_qs = [], [], [], []
    for i, model in enumerate(toy_models):
        proj = GaussianProjector(n_params(model), K, seed=i)
        blocks.append(trak_block(model, toy_data, proj, None, None, ARGS, pack=False)[0])
        ref_blocks.append(brute_block(model, toy_data, i, None))
        for d in range(D):
            mask = MaskSpec(seed=100 * i + d, rate=RATE)
            qs.append(forward_outputs(model, toy_data.x_train, toy_data.y_train, mask,
                                      "train", batch_size=13)[1])
            ref_qs.append(brute_grads_and_q(model, toy_data.x_train, toy_data.y_train,
                                            mask, "train")[1])
    got = trak_scores(qs, blocks)
    ref = torch.stack(ref_qs).mean(0)[None, :] * torch.stack(ref_blocks).mean(0)
    assert max_rel_err(got, ref) < 1e-5
    # Masked Q must differ from the unmasked Q, otherwise the variant is not exercised.
    unmasked_q = brute_grads_and_q(toy_models[0], toy_data.x_train, toy_data.y_train,
                                   None, "train")[1]
    assert not torch.allclose(ref_qs[0], unmasked_q, rtol=1e-3)


def test_trak_scores_is_mean_q_times_mean_block():
    q = [torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])]
    blocks = [torch.ones(3, 2), 3 * torch.ones(3, 2)]
    expected = torch.tensor([[4.0, 6.0]] * 3)
    torch.testing.assert_close(trak_scores(q, blocks), expected)


def test_kernel_solve_explicit_ridge_matches_formula():
    gen = torch.Generator().manual_seed(0)
    train, test = torch.randn(30, 6, generator=gen), torch.randn(4, 6, generator=gen)
    block, used = kernel_solve(train, test, ridge=0.5)
    Phi, phi = train.double(), test.double()
    ref = phi @ torch.linalg.inv(Phi.T @ Phi + 0.5 * torch.eye(6, dtype=torch.float64)) @ Phi.T
    assert used == 0.5
    assert max_rel_err(block, ref) < 1e-6


def test_kernel_solve_adds_and_records_ridge_only_when_singular():
    gen = torch.Generator().manual_seed(1)
    # n < k: Phi^T Phi has rank n and cannot be inverted without a ridge.
    block, used = kernel_solve(torch.randn(5, 12, generator=gen), torch.randn(3, 12, generator=gen))
    assert used > 0.0
    assert torch.isfinite(block).all()
    # Full rank: no ridge.
    _, used = kernel_solve(torch.randn(40, 12, generator=gen), torch.randn(3, 12, generator=gen))
    assert used == 0.0


@pytest.mark.parametrize("ridge", [None, 0.0])
def test_kernel_solve_reproduces_train_features_on_train_set(ridge):
    """With test = train, the block is the hat matrix: idempotent and symmetric."""
    gen = torch.Generator().manual_seed(2)
    train = torch.randn(25, 5, generator=gen)
    hat, _ = kernel_solve(train, train, ridge)
    torch.testing.assert_close(hat, hat.T, atol=1e-5, rtol=0)
    torch.testing.assert_close(hat @ hat, hat, atol=1e-5, rtol=0)
    assert abs(float(torch.trace(hat)) - 5.0) < 1e-4  # trace of a projector = its rank


# --------------------------------------------------------------------------- stored form


def test_packed_features_are_their_float16_rounding_at_any_magnitude():
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(20, 9, generator=gen)
    for magnitude in (1e-9, 1.0, 1e9):  # far outside float16's range at both ends
        f = base * magnitude
        values, scale = pack_features(f)
        assert values.dtype == torch.float16 and torch.isfinite(values).all()
        assert float(torch.log2(scale)) == int(torch.log2(scale))  # a power of two
        assert 1.0 <= float(values.abs().max()) < 2.0
        back = unpack_features(values, scale)
        # float16 keeps 11 significant bits: each entry within half an ulp, 2^-11 of
        # itself, apart from entries 2^-14 below the largest (subnormals), absolutely
        # within 2^-25 of the largest
        bound = torch.maximum(f.double().abs() * 2.0 ** -11, f.abs().max() * 2.0 ** -25)
        assert ((back - f.double()).abs() <= bound).all()
        # the scale only moves the exponent: the same values as rounding f itself
        assert torch.equal(round_features(f), back)


def test_the_gram_solve_equals_the_kernel_solve_when_n_is_below_k():
    gen = torch.Generator().manual_seed(4)
    train, test = torch.randn(7, 20, generator=gen), torch.randn(3, 20, generator=gen)
    chol_k, used = train_side(train)
    chol_n, used_n = gram_side(train)
    assert used == used_n > 0 and chol_n.shape == (7, 7)
    via_kernel = score_rows(test, train, chol_k)
    via_gram = score_rows_gram(test, train, chol_n)
    # both in float64 on a kernel of condition ~1e5 (the auto ridge is 1e-5 of its mean
    # eigenvalue); what is left is float32's output rounding
    assert max_rel_err(via_gram, via_kernel.double()) < 1e-6
    assert uses_gram(7, 20, None) and uses_gram(7, 20, 0.5)
    assert not uses_gram(7, 20, 0.0) and not uses_gram(20, 20, None)
