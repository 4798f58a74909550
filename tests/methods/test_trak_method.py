"""TRAK's stored payload: float16 features, no k x k factor when n < k, and scores that
move by less than a measured bound from the float32 ones."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import spearmanr

from raytda.core.args import ComputeArgs
from raytda.core.grads import n_params
from raytda.core.masks import MaskSpec
from raytda.core.projection import GaussianProjector
from raytda.methods.trak import TRAK, kernel_payload, trak_block

ARGS = ComputeArgs(grad_batch=7)

# Measured on the toy task (n = 60 train, 12 test rows), 2 trained models x 4 projection
# seeds x (no mask, dropout mask): float16 storage moved a block by at most 1.6e-3 of its
# largest score with k = 16 (n > k, no ridge) and 2.8e-2 with k = 128 (n < k: the auto
# ridge is 1e-5 of the kernel's mean eigenvalue, so the solve amplifies rounding); every
# test row's Spearman correlation with the float32 block stayed >= 0.9998 and >= 0.9977.
# The bounds are those maxima with a margin of about 3x.
BOUNDS = {16: (5e-3, 0.999), 128: (0.1, 0.99)}


@pytest.mark.parametrize("k", sorted(BOUNDS))
@pytest.mark.parametrize("masked", [False, True])
def test_half_precision_storage_changes_scores_by_less_than_the_measured_bound(
        toy_models, toy_data, k, masked):
    max_err, min_rho = BOUNDS[k]
    for model in toy_models:
        for seed in (0, 1):
            proj = GaussianProjector(n_params(model), k, seed)
            mask = MaskSpec(seed=seed, rate=0.1) if masked else None
            full, _ = trak_block(model, toy_data, proj, mask, None, ARGS, pack=False)
            half, info = trak_block(model, toy_data, proj, mask, None, ARGS)
            assert (info["ridge"] > 0) == (k > toy_data.n_train)
            err = float((half.double() - full.double()).abs().max() / full.abs().max())
            assert 0 < err < max_err  # > 0: the stored values really are rounded
            rho = min(spearmanr(half[i], full[i])[0] for i in range(full.shape[0]))
            assert rho > min_rho


def features(n: int, m: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=gen), torch.randn(m, k, generator=gen)


def test_a_train_set_smaller_than_k_stores_no_k_by_k_factor():
    n, m, k = 12, 5, 40
    train, test = features(n, m, k, 0)
    payload, info = kernel_payload(train, test, None)
    assert "chol" not in payload and info["ridge"] > 0
    assert payload["train_features"].dtype == torch.float16
    assert payload["test_features"].dtype == torch.float16
    assert max(t.numel() for t in payload.values()) == n * k  # nothing k x k
    loaded = TRAK().loaded(payload)
    assert loaded["gram_chol"].shape == (n, n)
    assert TRAK().loaded(loaded) is loaded  # loading twice rebuilds nothing
    # scores from the stored form and the loaded form are the same computation
    assert torch.equal(TRAK().score_rows(payload, slice(1, 4)),
                       TRAK().score_rows(loaded, slice(1, 4)))

    big_train, _ = features(3 * k, m, k, 1)  # n >= k: the k x k factor is kept
    payload, info = kernel_payload(big_train, test, None)
    assert payload["chol"].shape == (k, k) and info["ridge"] == 0.0


@pytest.mark.parametrize("n", [12, 80])  # through the Gram (n < k) and the kernel
def test_new_inputs_score_as_the_stored_test_rows(n):
    """The query path rounds new inputs' features as the stored test rows were, so a
    stored row scores the same from either path (up to the solve's rounding order)."""
    train, test = features(n, 6, 40, 2)
    payload, _ = kernel_payload(train, test, None)
    trak = TRAK()
    side = trak.query_side(payload, torch.device("cpu"))
    assert side["solved"].shape == (40, n)
    stored = trak.score_rows(payload, slice(None))
    new = trak.score_features(side, test)
    assert float((new - stored).abs().max() / stored.abs().max()) < 1e-5


def test_a_payload_of_revision_0_still_scores_as_it_did():
    """Stored before float16 storage: float32 features and the k x k factor, no scales
    and no ridge tensor. Revision 1 changed TRAK's keys, so a sweep never mixes the two,
    but such a payload read directly still gives its old scores."""
    from raytda.core.trak import kernel_solve, train_side

    train, test = features(50, 4, 16, 3)
    old = {"train_features": train, "chol": train_side(train)[0], "test_features": test}
    ref, _ = kernel_solve(train, test)
    assert torch.equal(TRAK().score_rows(old, slice(None)), ref)
    side = TRAK().query_side(old, torch.device("cpu"))
    assert side["solved"].shape == (16, 50)
    assert TRAK.revision == 1 and TRAK().loaded(old) is old


@pytest.mark.parametrize("n", [12, 80])  # through the Gram (n < k) and the kernel
def test_a_ridge_scale_is_that_multiple_of_the_kernels_mean_nonzero_eigenvalue(n):
    """ridge_scale S solves with lambda = S tr(Phi^T Phi) / min(n, k) of the stored
    features: the same payload as that ridge given outright, on either side of k = n."""
    from raytda.core.trak import unpack_features

    k = 40
    train, test = features(n, 5, k, 4)
    scaled, info = kernel_payload(train, test, None, ridge_scale=3.0)
    phi = unpack_features(scaled["train_features"], scaled["train_scale"])
    nonzero = torch.linalg.eigvalsh(phi.T @ phi)[-min(n, k):]
    assert info["ridge"] == pytest.approx(3.0 * float(nonzero.mean()), rel=1e-9)
    given, _ = kernel_payload(train, test, info["ridge"])
    assert torch.equal(TRAK().score_rows(scaled, slice(None)),
                       TRAK().score_rows(given, slice(None)))
    # and it is a real ridge: the scores differ from TRAK's own (none unless singular)
    own, _ = kernel_payload(train, test, None)
    assert not torch.allclose(TRAK().score_rows(own, slice(None)),
                              TRAK().score_rows(scaled, slice(None)))


def test_row_shards_use_the_same_relative_ridge():
    """A member built in train-row shards sums the kernel over shards; its ridge is the
    same multiple of the same trace, so it scores as the whole member does."""
    from raytda.methods import Method

    spec = Method("trak", proj_dim=16, features="dense", ridge_scale=3.0)
    train, test = features(50, 4, 16, 5)
    trak = TRAK()
    whole, _ = trak.finalize(spec, train, test)
    shards = [trak.shard_payload(spec, train[a:a + 20]) for a in (0, 20, 40)]
    payload, info = trak.finalize_shards(spec, shards, test)
    assert info["ridge"] == pytest.approx(float(whole["ridge"]), rel=1e-9)
    parts = [trak.score_shard(payload, s, slice(None)) for s in shards]
    # one float64 solve in another order, stored as float32: float32 rounding apart
    assert torch.allclose(torch.cat(parts, 1), trak.score_rows(whole, slice(None)),
                          rtol=1e-5, atol=1e-6)
