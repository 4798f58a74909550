"""Gradient features: how a member's per-sample gradients of f become the vectors that an
attribution method compares (one class per way, one file each).

``dense`` (the default) takes exact per-sample gradients and, when asked for k
dimensions, multiplies them by a dense Gaussian matrix. ``register_features`` adds another
way from any module; methods reach it only through :class:`GradientFeatures`.
"""

from raytda.features.base import (
    FEATURES,
    Featurizer,
    GradientFeatures,
    features_from,
    register_features,
)

__all__ = ["FEATURES", "Featurizer", "GradientFeatures", "features_from", "register_features"]

from raytda.features import builtin  # noqa: E402, F401, I001
