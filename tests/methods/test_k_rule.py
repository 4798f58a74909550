"""The default projection dimension rule (raytda.methods.k_rule)."""

from __future__ import annotations

from raytda.methods.k_rule import PROJ_DIM_RULE, ProjDimRule


def test_k_is_a_power_of_two_at_most_n_over_c_within_the_clip():
    rule = ProjDimRule(rows_per_dim=8, low=16, high=2048)
    for n in (2, 60, 511, 512, 1000, 1023, 4096, 5000, 10**6):
        k = rule.choose(n)
        assert k & (k - 1) == 0 and 16 <= k <= 2048
        assert k <= max(16, n // 8)  # never past n / C unless the clip's floor says so
        assert k == 2048 or k > n // 16  # and the largest such power of two


def test_k_grows_with_n_and_matches_the_fitted_table():
    ks = [PROJ_DIM_RULE.choose(n) for n in (100, 1000, 5000, 20000, 10**7)]
    assert ks == sorted(ks)
    rule = ProjDimRule()
    # the settings of benchmarks/results/lds_vs_k_issue28.md
    assert rule.choose(400) == 32 and rule.choose(1000) == 64 and rule.choose(1400) == 128
    assert rule.choose(5000) == 512 and rule.choose(60) == 16
    assert rule.choose(10**7) == 2048
    assert "n=1000" in rule.why(1000)
