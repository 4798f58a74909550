"""Grad-Dot and Grad-Cos: inner products (or cosines) of per-sample gradient features."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def unit_rows(g: torch.Tensor) -> torch.Tensor:
    """Each row scaled to unit norm (zero rows stay zero)."""
    return g / g.norm(dim=1, keepdim=True).clamp_min(torch.finfo(g.dtype).tiny)


def similarity_block(test: torch.Tensor, train_batches: Iterable[tuple[slice | torch.Tensor,
                                                                        torch.Tensor]],
                     n_train: int, normalize: bool) -> torch.Tensor:
    """(m x n_train) matrix of test features times train features, cosines if
    ``normalize``. Train features arrive in batches ((rows, features)), so n_train x p is
    never held; products run where ``test`` is."""
    if normalize:
        test = unit_rows(test)
    out = torch.empty(test.shape[0], n_train)
    for rows, g in train_batches:
        g = g.to(test.device)
        if normalize:
            g = unit_rows(g)
        out[:, rows] = (test @ g.T).cpu()
    return out
