"""TRAK per member and its eq. 2 aggregation.

For member e with projected train features Phi_e (n x k) and test features phi_e (m x k),
the member's block is B_e = phi_e (Phi_e^T Phi_e + ridge I)^-1 Phi_e^T (m x n). The
ensemble score is mean_e(Q_e)[None, :] * mean_e(B_e).

A member's train side, Phi_e and the Cholesky factor L_e of its kernel, is computed once
(``train_side``); any rows of test features are scored against it later
(``score_rows``), so new inputs never recompute it and no m x n block has to exist. The
features themselves come from :mod:`raytda.features`.
"""

from __future__ import annotations

import torch

# Relative ridge (times the mean kernel eigenvalue) used only when the kernel is singular.
AUTO_RIDGE = 1e-5


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
