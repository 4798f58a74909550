"""TRAK per member and its eq. 2 aggregation.

For member e with projected train features Phi_e (n x k) and test features phi_e (m x k),
the member's block is B_e = phi_e (Phi_e^T Phi_e + ridge I)^-1 Phi_e^T (m x n). The
ensemble score is mean_e(Q_e)[None, :] * mean_e(B_e).
"""

from __future__ import annotations

import torch
from torch import nn

from raytda.core.args import ComputeArgs
from raytda.core.grads import n_trainable, per_sample_grads
from raytda.core.masks import MaskSpec
from raytda.core.outputs import CLASSIFICATION, ModelOutput
from raytda.core.projection import GaussianProjector
from raytda.core.sparse_input import SparseInputProjection

# Relative ridge (times the mean kernel eigenvalue) used only when the kernel is singular.
AUTO_RIDGE = 1e-5


def project_features(model: nn.Module, x: torch.Tensor, y: torch.Tensor, projector: GaussianProjector,
                     mask: MaskSpec | None, split: str, args: ComputeArgs,
                     sparse: SparseInputProjection | None = None,
                     output: ModelOutput = CLASSIFICATION) -> torch.Tensor:
    """(n, k) projected per-sample gradients of the model output.

    ``sparse`` (from ``SparseInputProjection.build`` with the same projector) computes the
    same features while skipping the zero inputs' share of the product.
    """
    if sparse is not None:
        return sparse.features(model, x, y, mask, split, args.grad_batch, args.device, output)
    out = torch.empty(x.shape[0], projector.k, dtype=torch.float32)
    for rows, g in per_sample_grads(model, x, y, mask, split, args.grad_batch, args.device,
                                    output):
        out[rows] = projector.project(g).float().cpu()
    return out


def kernel_solve(train_feats: torch.Tensor, test_feats: torch.Tensor,
                 ridge: float | None = None) -> tuple[torch.Tensor, float]:
    """phi (Phi^T Phi + ridge I)^-1 Phi^T in float64, and the ridge actually used.

    ``ridge=None``: none if the kernel is positive definite, else AUTO_RIDGE times its mean
    eigenvalue (it is singular for certain when n < k).
    """
    phi_tr = train_feats.double()
    kern = phi_tr.T @ phi_tr
    k = kern.shape[0]
    eye = torch.eye(k, dtype=kern.dtype)
    if ridge is None:
        ridge = 0.0
        chol, info = torch.linalg.cholesky_ex(kern)
        if info.item() != 0 or train_feats.shape[0] < k:
            ridge = AUTO_RIDGE * float(torch.trace(kern)) / k
            chol = torch.linalg.cholesky(kern + ridge * eye)
    else:
        chol = torch.linalg.cholesky(kern + ridge * eye)
    solved = torch.cholesky_solve(test_feats.double().T, chol)  # (k, m)
    return (solved.T @ phi_tr.T).float(), float(ridge)


def trak_block(model: nn.Module, data, projector: GaussianProjector, mask: MaskSpec | None,
               ridge: float | None, args: ComputeArgs,
               output: ModelOutput = CLASSIFICATION) -> tuple[torch.Tensor, dict]:
    """One member's (m x n) TRAK block and what was used to make it.

    ``projector`` has one row per trainable parameter (``n_trainable(model)``).
    """
    sparse = (SparseInputProjection.build(model, projector, data.x_train, args.grad_batch)
              if args.sparse_inputs else None)
    feats_tr = project_features(model, data.x_train, data.y_train, projector, mask, "train", args,
                                sparse, output)
    feats_te = project_features(model, data.x_test, data.y_test, projector, mask, "test", args,
                                sparse, output)
    block, used = kernel_solve(feats_tr, feats_te, ridge)
    return block, {"ridge": used, "proj_dim": projector.k, "n_params": n_trainable(model)}


def trak_scores(q_values: list[torch.Tensor], blocks: list[torch.Tensor]) -> torch.Tensor:
    """Eq. 2: (mean of Q over Q-members) times (mean of blocks over feature members)."""
    q = torch.stack(q_values).mean(0)
    return torch.stack(blocks).mean(0) * q.unsqueeze(0)
