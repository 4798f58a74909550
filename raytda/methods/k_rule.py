"""The projection dimension k a method uses when neither the Method nor the Task says.

TRAK solves against the kernel Phi^T Phi (k x k) of n projected train gradients. As k
nears n, the kernel's smallest eigenvalues belong to directions the train set barely
spans, its inverse amplifies them, and LDS falls; above n the kernel is singular and only
the ridge holds it. A smaller k is also cheaper to serve (features, solve and store all
scale with k). So the default k grows with n, as the largest power of two at most
n / C, clipped to [LOW, HIGH]:

    k = clip(2 ** floor(log2(n / C)), LOW, HIGH)

C, LOW and HIGH are fitted to TRAK's LDS against k measured on one store per setting, the
paper's protocol (m = 50), naive I=1 (Dropout I=1 D=10 agrees), se about 0.01
(``benchmarks/lds_vs_k.py``; every table in benchmarks/results/lds_vs_k_issue28.md):

- digits-mlp (17k parameters): best k = 16-32 at every n measured, LDS falling as k grows
  towards n. n = 200: 0.577 at k = 16 (the rule's), 0.092 at 256; n = 400: 0.468 at 16,
  0.378 at 32 (the rule's), 0.110 at 256; n = 1000: 0.299 at 16, 0.260 at 64 (the
  rule's), 0.237 at 128, 0.040 at 1024, 0.078 at 2048; n = 1400: 0.274 at 32, 0.248 at
  128 (the rule's), 0.065 at 2048.
- digits-mlp at n = 1000 with other widths: 2.8k parameters best at 32 (0.236; 0.197 at
  64, the rule's), 167k best at 64 (0.332, the rule's; 0.118 at 2048): at fixed n the
  best k grows with the model.
- MNIST-MLP (109k parameters), n = 5000: 0.058 at 128, 0.066 at 256, 0.092 at 512 (the
  rule's), 0.088 at 1024, 0.084 at 2048 (se 0.007): here k must reach about n / 10.

- CIFAR-2 ResNet-9 (77k parameters), n = 1000: 0.137 at 64 (the rule's, the best), 0.126
  at 128, 0.037 at 1024, 0.053 at 2048.
- The Music Transformer (119k parameters, f summed over 64 positions), n = 500: 0.104 at
  32 (the rule's), 0.128 at 128, 0.025 at 512, 0.164 at 2048 (the best, 2.1 se above the
  rule's). The rule does not fit this sequence model: above n its Gram kernel recovers
  past every small k. A sequence Task with few rows should declare its k (or pass one)
  until k is chosen from the data rather than from n alone.

So the best k depends on the model as well as n (about 16-32 for the digits MLP whatever
n, at least n / 10 for the MNIST MLP); C = 8 keeps MNIST-MLP on its plateau (C = 16 would
give 256: 0.066), and on digits it is within 0.04 of the best at n >= 1000 and far above
k = 2048 everywhere. LOW = 16 because digits at n <= 400 keeps gaining down to 16.

The paper's settings keep the k the paper states (2048) by declaring it
(``Task.default_proj_dim``); an explicit ``Method(proj_dim=...)`` always wins. The ridge stays
TRAK's (none unless the kernel is singular): with k <= n / C it is singular only when the
gradients span fewer than k directions, and then TRAK's automatic ridge applies.
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
