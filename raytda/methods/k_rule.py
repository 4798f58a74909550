"""The projection dimension k and the ridge TRAK uses when neither the Method nor the Task
says.

TRAK solves against the kernel Phi^T Phi (k x k) of n projected train gradients. With no
ridge, as k nears n the kernel's smallest eigenvalues belong to directions the train set
barely spans, its inverse amplifies them, and LDS falls to a dip at k ~ n (the
interpolation peak of an unregularized least-squares fit); above n only TRAK's tiny
automatic ridge holds the kernel. A ridge in proportion to the kernel removes the dip:

    lambda = S * tr(Phi^T Phi) / min(n, k)        (S times the mean nonzero eigenvalue)

computed per member from its own features, and then LDS rises with k to about k = n and
keeps a little gain above it. So the default is

    S = 3,    k = clip(smallest power of two >= 4 n, 16, 2048)

Measured with ``benchmarks/lds_vs_k_ridge.py`` (each k x S re-solved from the same stored
members, the paper's LDS protocol, m = 50; every table in
benchmarks/results/lds_vs_k_2026-12-07.md). LDS at the rule's (k, S), against TRAK's own
ridge at the former n / 8 rule's k and the best cell measured:

- digits-mlp (17k parameters), naive I=1: n = 1000 0.456 at (2048, 3), the best (0.260
  at the former k = 64, 0.237 at k = 128); n = 1400 0.439, the best; n = 400 0.653 and
  n = 200 0.877 (k = 1024), where S = 10 is better (0.681, 0.901). Dropout I=1 D=10 the
  same: best or, at n <= 400, below S = 10.
- MNIST-MLP (109k), n = 5000: 0.155, the best (0.084 at k = 2048 without the ridge);
  Dropout I=1 D=10 0.202 (0.174 without; best 0.216 at S = 0.3).
- CIFAR-2 ResNet-9 (77k), n = 1000: 0.276 (best 0.279 at k = 1024; 0.137 at the former
  k = 64); Dropout I=1 D=10 0.309, the best (0.128 without the ridge).
- The Music Transformer (119k, f summed over 64 positions), n = 500: 0.273 (best 0.278 at
  S = 10; the former rule's k = 32 gave 0.104, and k = 512 without a ridge 0.025, the
  dip); Dropout I=1 D=10 0.291, the best.

S = 3 is the best scale or within about 1 se of it everywhere but digits at n <= 400 (S =
10 better by 0.02-0.03, over 3 se) and MNIST-MLP's Dropout (S = 0.3 better by 0.014, 1.7
se). The factor 4 is the Music Transformer's: it still gains from k = n (512: 0.220) to
4n (2048: 0.273), where the classifiers are flat above n; 2048 (the paper's k) caps the
serving cost, which grows with k.

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

    dims_per_row: float = 4.0
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
