"""Sketched gradient features: one k-dim TensorSketch / CountSketch of each sample's whole
gradient, from the same hooked forward + backward as the factorized part
(:mod:`raytda.core.tensor_sketch`; the math and the variance are in its docstring).

Like ``factorized``, it never forms a large per-sample gradient and costs about one hooked
pass; unlike it, every block adds into the same k coordinates through a CountSketch of its
gradient matrix, so inner products are unbiased with a variance that falls like 1/k, near
a dense Gaussian's of the same k (measured in ``benchmarks/bench_scale.py``, table 2).
Uncovered parameters are projected densely into the same coordinates or left out
(``uncovered="dense"|"skip"``), listed in every payload's metadata and the results.
It always projects (``exact = False``): methods that need exact gradients refuse it.
"""

from __future__ import annotations

from dataclasses import dataclass

from raytda.features.base import register_features
from raytda.features.factorized import FactorizedFeatures, FactorizedFeaturizer


class SketchFeaturizer(FactorizedFeaturizer):
    """One member's sketched features (see the module docstring)."""

    def __init__(self, net, k: int, seed: int, args, output, uncovered: str) -> None:
        from raytda.core.tensor_sketch import SketchProjector

        self.args, self.output = args, output
        self.proj = SketchProjector(net, k, seed, uncovered, args.device)
        self.dim = self.proj.dim


@register_features
@dataclass(frozen=True)
class SketchFeatures(FactorizedFeatures):
    """One shared k-dim sketch of the whole per-sample gradient from a hooked pass;
    ``uncovered`` says what happens to parameters outside covered layers: ``"dense"``
    (a CountSketch of their gradient into the same k coordinates) or ``"skip"`` (left
    out)."""

    name = "sketch"
    # 1: uncovered parameters take a CountSketch (0, a dense Gaussian, lived on a branch)
    revision = 1
    featurizer_cls = SketchFeaturizer
