"""Seeded blockwise Gaussian projection."""

from __future__ import annotations

import pytest
import torch

from raytda.core.projection import CHUNK_ROWS, GaussianProjector

P = 2 * CHUNK_ROWS + 123  # three chunks, the last one partial
K = 8
ONE_CHUNK = CHUNK_ROWS * K * 4  # bytes of one float32 chunk


def grads(n: int = 5, p: int = P) -> torch.Tensor:
    return torch.randn(n, p, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("budget", [ONE_CHUNK, 2 * ONE_CHUNK, 1 << 30])
def test_same_values_under_any_memory_budget(budget):
    resident = GaussianProjector(P, K, seed=3)
    assert resident.resident
    proj = GaussianProjector(P, K, seed=3, memory_bytes=budget)
    assert proj.resident == (budget == 1 << 30)
    assert torch.equal(proj.matrix(), resident.matrix())
    g = grads()
    # Reference: the explicit product with the full matrix, in float64. Blocking and the
    # BLAS change the float32 summation order, so only the rounding may differ.
    ref = (g.double() @ resident.matrix().double()).float()
    torch.testing.assert_close(resident.project(g), ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(proj.project(g), ref, rtol=1e-5, atol=1e-4)


def test_blockwise_covers_every_row_once():
    proj = GaussianProjector(P, K, seed=1, memory_bytes=ONE_CHUNK)
    rows = [r for r, _ in proj.blocks()]
    assert rows[0].start == 0 and rows[-1].stop == P
    assert all(a.stop == b.start for a, b in zip(rows, rows[1:], strict=False))
    assert proj.matrix().shape == (P, K)


def test_reproducible_from_seed_and_seeds_differ():
    a = GaussianProjector(P, K, seed=7).matrix()
    assert torch.equal(a, GaussianProjector(P, K, seed=7).matrix())
    b = GaussianProjector(P, K, seed=8).matrix()
    assert not torch.allclose(a, b)
    # Independent draws: nearly uncorrelated, not merely shifted or rescaled.
    corr = torch.corrcoef(torch.stack([a.reshape(-1), b.reshape(-1)]))[0, 1]
    assert abs(float(corr)) < 0.05


def test_chunks_are_not_repeated():
    """Each chunk has its own generator state; identical chunks would correlate features."""
    m = GaussianProjector(P, K, seed=0).matrix()
    assert not torch.allclose(m[:CHUNK_ROWS], m[CHUNK_ROWS:2 * CHUNK_ROWS])


def test_entries_have_variance_one_over_k():
    k = 64
    m = GaussianProjector(CHUNK_ROWS, k, seed=2).matrix()
    assert abs(float(m.mean())) < 0.01
    assert abs(float(m.var()) * k - 1.0) < 0.05
    # So projected squared norms are unbiased (Johnson-Lindenstrauss scaling).
    g = grads(200, CHUNK_ROWS)
    ratio = (g @ m).pow(2).sum(1) / g.pow(2).sum(1)
    assert abs(float(ratio.mean()) - 1.0) < 0.1


def test_float64_projector_matches_float32_values():
    a = GaussianProjector(P, K, seed=5, dtype=torch.float64)
    b = GaussianProjector(P, K, seed=5)
    torch.testing.assert_close(a.matrix().float(), b.matrix())
    assert a.project(grads()).dtype == torch.float64


def test_projection_dimension_below_one_is_an_error():
    with pytest.raises(ValueError, match="projection dimension must be >= 1"):
        GaussianProjector(P, 0, seed=0)


def test_budget_below_one_chunk_is_an_error():
    with pytest.raises(ValueError, match="below one chunk"):
        GaussianProjector(P, K, seed=0, memory_bytes=ONE_CHUNK - 1)


def test_wrong_gradient_width_is_an_error():
    with pytest.raises(ValueError, match="gradient width"):
        GaussianProjector(P, K, seed=0).project(torch.zeros(2, P + 1))

