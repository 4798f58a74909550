"""The default projection dimension and ridge rules (raytda.methods.k_rule)."""

from __future__ import annotations

from raytda.methods.k_rule import PROJ_DIM_RULE, RIDGE_RULE, ProjDimRule


def test_k_is_the_smallest_power_of_two_at_least_4n_within_the_clip():
    rule = ProjDimRule(dims_per_row=4.0, low=16, high=2048)
    for n in (1, 2, 60, 127, 128, 129, 511, 512, 1000, 5000, 10**6):
        k = rule.choose(n)
        assert k & (k - 1) == 0 and 16 <= k <= 2048
        assert k >= min(4 * n, 2048)  # covers 4n unless the clip's ceiling says so
        assert k == 16 or k < 8 * n  # and the smallest such power of two


def test_k_grows_with_n_and_matches_the_measured_table():
    ks = [PROJ_DIM_RULE.choose(n) for n in (100, 1000, 5000, 20000, 10**7)]
    assert ks == sorted(ks)
    # the settings of benchmarks/results/lds_vs_k_2026-12-07.md
    assert [PROJ_DIM_RULE.choose(n) for n in (200, 400, 500, 1000, 1400, 5000)] == \
        [1024, 2048, 2048, 2048, 2048, 2048]
    assert PROJ_DIM_RULE.choose(60) == 256 and PROJ_DIM_RULE.choose(3) == 16
    assert ProjDimRule(dims_per_row=2.0).choose(300) == 1024  # the multiple counts
    assert "n=1000" in PROJ_DIM_RULE.why(1000)


def test_the_ridge_rule_is_a_positive_scale_and_says_so():
    assert RIDGE_RULE.choose() == 3.0  # the measured scale (results file above)
    assert "mean nonzero eigenvalue" in RIDGE_RULE.describe()
    assert RIDGE_RULE.why() == "rule"
