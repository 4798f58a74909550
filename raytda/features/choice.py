"""Which gradient features a method uses when neither the Method nor the Task says.

Dense features (exact per-sample gradients times a dense Gaussian P, p x k) are the most
accurate per dimension, and cost per sample a per-sample gradient (p numbers) and a
p x k product, plus P itself: p x k normals, drawn once per member while P fits the
projection budget (1 GiB by default: p <= 131,072 at k = 2048) and again for every batch
beyond it. Sketched features (``sketch``, TensorSketch of per-layer outer products, from
hooks: no per-sample gradient and no P) cost about one forward + backward whatever p is.
So the default is dense up to a parameter count and sketched above it:

    features = "dense" if n_params <= MAX_DENSE_PARAMS else "sketch"

The threshold (``FeaturesRule.max_dense_params``, 131,072) is where P at k = 2048 stops
fitting the default 1 GiB projection budget, and where dense's measured cost jumps
(``benchmarks/bench_features_threshold.py``, k = 2048, 2-core CPU under load 12-15;
benchmarks/results/features_threshold_issue28.md), per sample and as a multiple of one
plain forward + backward over the same samples:

- MLP 784-h-h/2-10: dense 0.011 s (6.6x) at 26k parameters, 0.048 s (9.2x) at 109k,
  0.45 s (86x) at 536k, P streamed; factorized 0.0007-0.0022 s (0.7x-2.4x) and
  sketch 0.003-0.005 s (0.6x-1.0x) at every size up to 3.7M;
- ResNet-9: dense 0.075 s (1.6x) at 76k, 0.21 s (3.1x) at 303k, P streamed; factorized
  0.03-0.16 s (0.5x-1.6x) up to 1.2M;
- GPT (2 layers, 64 tokens): dense 0.032 s (1.5x) at 44k, 0.087 s (1.2x) at 137k,
  0.41 s (5.9x) at 471k, P streamed.

Dense is the accurate choice (issue 28: factorized LDS up to 4 se lower at k = 2048), so
it is kept wherever P stays resident; above, its cost grows with p x k per sample while
hook-based features stay about one plain pass. The threshold is a parameter count at
k = 2048: at the small k the k rule gives small data sets, P would fit for larger models,
a margin the rule does not use.
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
