"""TRAK per member and its eq. 2 aggregation.

For member e with projected train features Phi_e (n x k) and test features phi_e (m x k),
the member's block is B_e = phi_e (Phi_e^T Phi_e + ridge I)^-1 Phi_e^T (m x n). The
ensemble score is mean_e(Q_e)[None, :] * mean_e(B_e).

A member's train side, Phi_e and the Cholesky factor L_e of its kernel, is computed once
(``train_side``); any rows of test features are scored against it later
(``score_rows``), so new inputs never recompute it and no m x n block has to exist. The
features themselves come from :mod:`raytda.features`.

Stored form. Features are stored in half precision (``pack_features``: float16 after a
power-of-two scale, so no value overflows and none underflows unless it is 2^-24 below the
tensor's largest) and every solve runs in float64 on the stored values, so scores depend
only on what is stored. When n < k the kernel is singular and a ridge is always added;
then the same solve, (Phi^T Phi + ridge I)^-1 Phi^T = Phi^T (Phi Phi^T + ridge I)^-1, runs
on the n x n Gram (``gram_side``), rebuilt from the stored features when a payload is
loaded instead of storing a k x k factor.
"""

from __future__ import annotations

import torch

# Relative ridge (times the mean kernel eigenvalue) used only when the kernel is singular.
AUTO_RIDGE = 1e-5

#: dtype features are stored in. Measured on the default digits sweep's members (k = 2048,
#: n = 1000): float16 changes a member's scores by at most 1e-2 of their largest, with
#: every test row's Spearman correlation to the float32 scores >= 0.9999; bfloat16 (8-bit
#: mantissa) by up to 6e-2, correlations down to 0.995. See benchmarks/README.md.
STORED_FEATURES = torch.float16


def pack_features(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(float16 values, power-of-two scale as a 0-d float64): features / scale rounded to
    float16 with the largest magnitude in [1, 2), so float16's range never clips. A
    power of two scales exactly: the values are the float16 rounding of the features
    themselves, whatever the scale."""
    peak = float(features.abs().max()) if features.numel() else 0.0
    exponent = int(torch.frexp(torch.tensor(peak, dtype=torch.float64)).exponent) - 1 \
        if peak > 0 and peak != float("inf") else 0
    scale = torch.tensor(2.0 ** exponent, dtype=torch.float64)
    return (features.double() / scale).to(STORED_FEATURES), scale


def unpack_features(values: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """Features in float64 from ``pack_features``' (values, scale); values alone (a
    payload stored before scales existed) are taken as they are."""
    out = values.double()
    return out if scale is None else out * scale.double()


def round_features(features: torch.Tensor) -> torch.Tensor:
    """Features as they would be stored (float64): new inputs are scored at the precision
    of the stored test rows, so a stored row scores the same either way."""
    return unpack_features(*pack_features(features))


def relative_ridge(trace: float, n_rows: int, k: int, scale: float) -> float:
    """The ridge ``scale`` times the mean nonzero eigenvalue of the kernel Phi^T Phi
    (k x k) of ``n_rows`` train rows: tr / min(n, k), since at most min(n, k) eigenvalues
    are nonzero and the Gram Phi Phi^T has the same trace. So one scale means the same
    shrinkage on either side of k = n (:mod:`raytda.methods.k_rule` says which scale)."""
    return scale * trace / max(1, min(n_rows, k))


def uses_gram(n_rows: int, k: int, ridge: float | None) -> bool:
    """Whether the solve runs on the n x n Gram: n < k, so the kernel is singular and a
    ridge is always added (an explicit ridge of 0 keeps the k x k kernel and its error)."""
    return n_rows < k and (ridge is None or ridge > 0)


def auto_ridge(trace: float, k: int) -> float:
    """The ridge added to a singular kernel: AUTO_RIDGE times its mean eigenvalue (the
    Gram and the kernel have the same trace)."""
    return AUTO_RIDGE * trace / k


def gram_side(train_feats: torch.Tensor, ridge: float | None = None
              ) -> tuple[torch.Tensor, float]:
    """Cholesky factor (n x n, float64) of Phi Phi^T + ridge I for n < k, and the ridge
    (``ridge=None``: ``auto_ridge``, as ``train_side`` would add)."""
    phi_tr = train_feats.double()
    gram = phi_tr @ phi_tr.T
    if ridge is None:
        ridge = auto_ridge(float(torch.trace(gram)), phi_tr.shape[1])
    eye = torch.eye(gram.shape[0], dtype=gram.dtype)
    return torch.linalg.cholesky(gram + ridge * eye), float(ridge)


def score_rows_gram(test_feats: torch.Tensor, train_feats: torch.Tensor,
                    gram_chol: torch.Tensor) -> torch.Tensor:
    """``score_rows`` through the Gram's factor: phi Phi^T (Phi Phi^T + ridge I)^-1."""
    cross = test_feats.double() @ train_feats.double().T  # (rows, n)
    return torch.cholesky_solve(cross.T.contiguous(), gram_chol).T.float()


def train_side(train_feats: torch.Tensor, ridge: float | None = None
               ) -> tuple[torch.Tensor, float]:
    """Cholesky factor L (k x k, float64) of Phi^T Phi + ridge I, and the ridge used.

    ``ridge=None``: none if the kernel is positive definite, else AUTO_RIDGE times its mean
    eigenvalue (it is singular for certain when n < k).
    """
    phi_tr = train_feats.double()
    return kernel_factor(phi_tr.T @ phi_tr, train_feats.shape[0], ridge)


def kernel_factor(kern: torch.Tensor, n_rows: int, ridge: float | None = None
                  ) -> tuple[torch.Tensor, float]:
    """``train_side`` from the kernel Phi^T Phi (k x k, float64) of ``n_rows`` train rows,
    however it was summed (e.g. over row shards, :mod:`raytda.methods.sharded`)."""
    k = kern.shape[0]
    eye = torch.eye(k, dtype=kern.dtype)
    if ridge is None:
        ridge = 0.0
        chol, info = torch.linalg.cholesky_ex(kern)
        if info.item() != 0 or n_rows < k:
            ridge = AUTO_RIDGE * float(torch.trace(kern)) / k
            chol = torch.linalg.cholesky(kern + ridge * eye)
    else:
        chol = torch.linalg.cholesky(kern + ridge * eye)
    return chol, float(ridge)


def score_rows(test_feats: torch.Tensor, train_feats: torch.Tensor, chol: torch.Tensor
               ) -> torch.Tensor:
    """phi (Phi^T Phi + ridge I)^-1 Phi^T for some test rows phi, in float64 (as float32)."""
    solved = torch.cholesky_solve(test_feats.double().T, chol)  # (k, rows)
    return (solved.T @ train_feats.double().T).float()


def kernel_solve(train_feats: torch.Tensor, test_feats: torch.Tensor,
                 ridge: float | None = None) -> tuple[torch.Tensor, float]:
    """phi (Phi^T Phi + ridge I)^-1 Phi^T in float64, and the ridge actually used."""
    chol, used = train_side(train_feats, ridge)
    return score_rows(test_feats, train_feats, chol), used


def trak_scores(q_values: list[torch.Tensor], blocks: list[torch.Tensor]) -> torch.Tensor:
    """Eq. 2: (mean of Q over Q-members) times (mean of blocks over feature members)."""
    q = torch.stack(q_values).mean(0)
    return torch.stack(blocks).mean(0) * q.unsqueeze(0)
