"""Which gradient features a method uses when neither the Method nor the Task says.

Dense features (exact per-sample gradients times a dense Gaussian P, p x k) are the most
accurate per dimension, and cost per sample a per-sample gradient (p numbers) and a
p x k product, plus P itself: p x k normals, drawn once per member while P fits the
projection budget (1 GiB by default: p <= 131,072 at k = 2048) and again for every batch
beyond it. Sketched features (``sketch``, TensorSketch of per-layer outer products, from
hooks: no per-sample gradient and no P) cost about one forward + backward whatever p is.
So the default is dense up to a parameter count and sketched above it:

    features = "dense" if n_params <= MAX_DENSE_PARAMS else "sketch"

MAX_DENSE_PARAMS is measured by ``benchmarks/bench_features_threshold.py`` (table in
benchmarks/results/features_threshold_issue28.md; see FeaturesRule for the numbers).
Methods that need exact gradients (IF) always get dense. Until a ``sketch`` part is
registered, the first registered of ``FeaturesRule.large`` stands in (``factorized``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FeaturesRule:
    """Dense features up to ``max_dense_params`` trainable parameters, else the first
    registered part of ``large``.

    Args:
        max_dense_params: the largest model (trainable parameters) that gets dense.
        large: features parts for larger models, in order of preference.
    """

    max_dense_params: int = 1 << 17
    large: tuple[str, ...] = ("sketch", "factorized")

    def choose(self, n_params: int) -> str:
        """The features part's name for a model of ``n_params`` parameters."""
        if n_params <= self.max_dense_params:
            return "dense"
        from raytda.features import FEATURES

        return next((name for name in self.large if name in FEATURES), self.large[-1])

    def why(self, n_params: int) -> str:
        """Why ``choose`` decided, short, for the results table."""
        return f"rule: {n_params:,} params"

    def describe(self) -> str:
        """The rule in words, for ``raytda list``."""
        return (f"dense up to {self.max_dense_params:,} parameters, else the first "
                f"registered of {', '.join(self.large)}")


#: the rule raytda uses
FEATURES_RULE = FeaturesRule()
