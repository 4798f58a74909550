"""Linear datamodeling score (appendix D)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from raytda.core.lds import lds, lds_subsets, spearman_columns, summarize
from raytda.specs import LDSSpec


@pytest.fixture
def problem() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(7, 40))  # (n_test, n_train)
    subsets = lds_subsets(40, LDSSpec(m=30, alpha=0.5, seed=1))
    return scores, subsets


def test_subsets_shape_size_and_seed():
    spec = LDSSpec(m=20, alpha=0.3, seed=4)
    s = lds_subsets(50, spec)
    assert s.shape == (20, 50) and s.dtype == bool
    assert (s.sum(1) == 15).all()
    assert np.array_equal(s, lds_subsets(50, spec))
    assert not np.array_equal(s, lds_subsets(50, spec.replace(seed=5)))
    assert len({row.tobytes() for row in s}) == 20  # subsets are distinct draws


def test_perfect_additive_predictor_scores_one(problem):
    scores, subsets = problem
    truth = subsets.astype(float) @ scores.T  # the datamodel is exactly right
    res = lds(scores, subsets, truth)
    np.testing.assert_allclose(res.per_sample, 1.0)
    assert res.mean == pytest.approx(1.0)


def test_reversed_predictor_scores_minus_one(problem):
    scores, subsets = problem
    truth = -(subsets.astype(float) @ scores.T)
    res = lds(scores, subsets, truth)
    np.testing.assert_allclose(res.per_sample, -1.0)
    assert res.mean == pytest.approx(-1.0)


def test_lds_is_rank_based(problem):
    """A monotone distortion of the true outputs does not change a Spearman score."""
    scores, subsets = problem
    truth = np.exp(subsets.astype(float) @ scores.T)
    np.testing.assert_allclose(lds(scores, subsets, truth).per_sample, 1.0)


def test_lds_pairs_each_test_sample_with_its_own_scores(problem):
    """Swapping two test rows of the scores must break their LDS (catches transposes)."""
    scores, subsets = problem
    truth = subsets.astype(float) @ scores.T
    swapped = scores[[1, 0, *range(2, len(scores))]]
    per = lds(swapped, subsets, truth).per_sample
    assert per[0] < 0.9 and per[1] < 0.9
    np.testing.assert_allclose(per[2:], 1.0)


def test_spearman_columns_matches_scipy_with_ties():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 4, size=(25, 6)).astype(float)  # many ties
    b = rng.integers(0, 3, size=(25, 6)).astype(float)
    got = spearman_columns(a, b)
    for t in range(6):
        assert got[t] == pytest.approx(spearmanr(a[:, t], b[:, t]).statistic, abs=1e-12)


def test_constant_column_is_nan_and_excluded_from_mean(problem):
    scores, subsets = problem
    truth = subsets.astype(float) @ scores.T
    truth[:, 2] = 3.0  # retrained outputs that never change: correlation undefined
    res = lds(scores, subsets, truth)
    assert np.isnan(res.per_sample[2])
    assert res.mean == pytest.approx(1.0)
    assert np.isfinite(res.se)


def test_summarize_mean_and_standard_error():
    vals = np.array([0.1, 0.3, np.nan, 0.5])
    res = summarize(vals)
    assert res.mean == pytest.approx(0.3)
    assert res.se == pytest.approx(np.std([0.1, 0.3, 0.5], ddof=1) / np.sqrt(3))
    assert np.isnan(summarize(np.array([np.nan, np.nan])).mean)


def test_shape_mismatches_are_errors(problem):
    scores, subsets = problem
    truth = subsets.astype(float) @ scores.T
    with pytest.raises(ValueError, match="train samples"):
        lds(scores[:, :-1], subsets, truth)
    with pytest.raises(ValueError, match=r"truth must be \(m, n_test\)"):
        lds(scores, subsets, truth.T)
