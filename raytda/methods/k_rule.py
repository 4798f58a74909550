"""The projection dimension k and the ridge TRAK uses when neither the Method nor the Task
says.

TRAK solves against the kernel Phi^T Phi (k x k) of n projected train gradients. With no
ridge, as k nears n the kernel's smallest eigenvalues belong to directions the train set
barely spans, its inverse amplifies them, and LDS falls to a dip at k ~ n (the
interpolation peak of an unregularized least-squares fit); above n only TRAK's tiny
automatic ridge holds the kernel. A ridge in proportion to the kernel removes the dip:

    lambda = S * tr(Phi^T Phi) / min(n, k)        (S times the mean nonzero eigenvalue)

and then LDS rises with k until about k = n and is flat above it. So the default is

    S = SCALE,    k = clip(smallest power of two >= n, LOW, HIGH)

Measured (``benchmarks/lds_vs_k_ridge.py``: every k x S re-solved from the same stored
members, the paper's LDS protocol, m = 50; tables in
benchmarks/results/lds_vs_k_2026-12-07.md). TRAK's own ridge (S = 0) against the rule:

- digits-mlp (17k parameters) n = 1000, naive I=1: 0.237 at k = 128 (the best without a
  ridge: 0.299 at k = 16), 0.442 at the rule's (k = 1024, S = 3), best 0.456 (2048, 3);
  Dropout I=1 D=10 0.474 at the rule's, the best. n = 1400: 0.439 (2048, 3), the best.
- MNIST-MLP (109k), n = 5000: 0.084 at k = 2048 with TRAK's ridge, 0.155 at the rule's
  (2048, 3), the best; Dropout I=1 D=10 0.202 (0.174 without; best 0.216 at S = 0.3).
- CIFAR-2 ResNet-9 (77k), n = 1000: 0.137 (best without: k = 64), 0.279 at the rule's
  (1024, 3), the best; Dropout I=1 D=10 at 2048: 0.128 without, 0.309 with S = 3.
- The Music Transformer (119k), n = 500: see the results file (the former n / 8 rule was
  2.1 se below k = 2048 there).

S = 3 is the best scale or within about 1 se of it on every row but two: digits at n <= 400
(best S = 10: n = 200, 0.901 against 0.877) and MNIST-MLP's Dropout (best S = 0.3-1). k
above n gains little once the ridge is in (digits n = 400: 0.646-0.656 for every k from
128 to 2048), and serving grows with k, so k stops at the first power of two >= n; HIGH =
2048 (the paper's k) bounds the cost where n is large (MNIST still gains up to 2048).

The paper's settings keep the paper's k (2048) and TRAK's own ridge (S = 0) by declaring
them (``Task.default_proj_dim``, ``Task.default_ridge_scale``); an explicit
``Method(proj_dim=..., ridge=..., ridge_scale=...)`` always wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ProjDimRule:
    """k from the number of train rows n (see the module docstring).

    Args:
        dims_per_row: k covers at least n times this (rounded up to a power of two).
        low, high: the clip (powers of two).
    """

    dims_per_row: float = 1.0
    low: int = 16
    high: int = 2048

    def choose(self, n_train: int) -> int:
        """k for ``n_train`` train rows."""
        target = max(1, math.ceil(n_train * self.dims_per_row))
        k = 1 << (target - 1).bit_length()  # the smallest power of two >= target
        return min(self.high, max(self.low, k))

    def why(self, n_train: int) -> str:
        """Why ``choose`` gave its k, short, for the results table."""
        return f"rule: n={n_train}"

    def describe(self) -> str:
        """The rule in words, for ``raytda list``."""
        times = "" if self.dims_per_row == 1 else f"{self.dims_per_row:g} x "
        return (f"k = smallest power of 2 >= {times}n, clipped to [{self.low}, {self.high}]")


@dataclass(frozen=True)
class RidgeRule:
    """TRAK's ridge scale S: lambda = S x the kernel's mean nonzero eigenvalue (see the
    module docstring); the eigenvalues are the member's own, so lambda follows the data."""

    scale: float = 3.0

    def choose(self) -> float:
        """The scale S."""
        return self.scale

    def why(self) -> str:
        """Why ``choose`` gave its scale, short, for the results table."""
        return "rule"

    def describe(self) -> str:
        """The rule in words, for ``raytda list``."""
        return (f"ridge = {self.scale:g} x the kernel's mean nonzero eigenvalue, "
                f"tr(Phi^T Phi) / min(n, k)")


#: the k rule raytda uses
PROJ_DIM_RULE = ProjDimRule()
#: the ridge rule raytda uses
RIDGE_RULE = RidgeRule()
