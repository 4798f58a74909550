"""The default gradient-features rule (raytda.features.choice)."""

from __future__ import annotations

from raytda.features import FEATURES
from raytda.features.choice import FEATURES_RULE, FeaturesRule


def test_dense_up_to_the_threshold_then_the_first_registered_large_part():
    rule = FeaturesRule(max_dense_params=1000, large=("no-such-part", "factorized"))
    assert rule.choose(1000) == "dense"
    assert rule.choose(1001) == "factorized"  # a part not registered is passed over
    assert "1,001 params" in rule.why(1001)


def test_the_default_rule_prefers_sketch_once_registered():
    big = FEATURES_RULE.max_dense_params + 1
    want = "sketch" if "sketch" in FEATURES else "factorized"
    assert FEATURES_RULE.choose(big) == want
    assert FEATURES_RULE.choose(FEATURES_RULE.max_dense_params) == "dense"
