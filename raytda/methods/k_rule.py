"""The projection dimension k a method uses when neither the Method nor the Task says.

TRAK solves against the kernel Phi^T Phi (k x k) of n projected train gradients. As k
nears n, the kernel's smallest eigenvalues belong to directions the train set barely
spans, its inverse amplifies them, and LDS falls; above n the kernel is singular and only
the ridge holds it. A smaller k is also cheaper to serve (features, solve and store all
scale with k). So the default k grows with n, as the largest power of two at most
n / C, clipped to [LOW, HIGH]:

    k = clip(2 ** floor(log2(n / C)), LOW, HIGH)

C, LOW and HIGH are fitted to TRAK's LDS against k measured on one store per setting
(``benchmarks/lds_vs_k.py``; tables in benchmarks/results/lds_vs_k_issue28.md):

- digits-mlp, n = 1000 (17k parameters), naive I=1: best at k = 128 (n / 8), falling
  above it (0.237 at 128 to 0.041 at 1024, issue 28); the table there gives this run's;
- MNIST-MLP, n = 5000: k = 512-2048 within 1.5 se (0.092 / 0.089 / 0.082), 256 lower
  (0.069) (issue 28): n / 8 = 625 gives 512, on the plateau.

The paper's settings keep the k the paper states (2048) by declaring it
(``Task.default_proj_dim``); an explicit ``Method(proj_dim=...)`` always wins. The ridge stays
TRAK's (none unless the kernel is singular): at k <= n / C the kernel is full rank.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProjDimRule:
    """k from the number of train rows n (see the module docstring).

    Args:
        rows_per_dim: C, train rows per projected dimension.
        low, high: the clip (powers of two).
    """

    rows_per_dim: int = 8
    low: int = 16
    high: int = 2048

    def choose(self, n_train: int) -> int:
        """k for ``n_train`` train rows."""
        target = max(1, n_train // self.rows_per_dim)
        k = 1 << (target.bit_length() - 1)  # the largest power of two <= n / C
        return min(self.high, max(self.low, k))

    def why(self, n_train: int) -> str:
        """Why ``choose`` gave its k, short, for the results table."""
        return f"rule: n={n_train}"

    def describe(self) -> str:
        """The rule in words, for ``raytda list``."""
        return (f"k = largest power of 2 <= n/{self.rows_per_dim}, clipped to "
                f"[{self.low}, {self.high}]")


#: the rule raytda uses
PROJ_DIM_RULE = ProjDimRule()
