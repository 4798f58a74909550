"""Grad-Dot and Grad-Cos: inner products of full (unprojected) per-sample gradients."""

from __future__ import annotations

import torch
from torch import nn

from raytda.core.args import ComputeArgs
from raytda.core.grads import per_sample_grads
from raytda.core.masks import MaskSpec


def _unit(g: torch.Tensor) -> torch.Tensor:
    return g / g.norm(dim=1, keepdim=True).clamp_min(torch.finfo(g.dtype).tiny)


def gradsim_block(model: nn.Module, data, mask: MaskSpec | None, normalize: bool,
                  args: ComputeArgs) -> torch.Tensor:
    """(m x n) matrix of g(test)^T g(train), with unit-normalized gradients if asked."""
    test = torch.cat([g for _, g in per_sample_grads(model, data.x_test, data.y_test, mask,
                                                     "test", args.grad_batch, args.device)])
    if normalize:
        test = _unit(test)
    out = torch.empty(data.n_test, data.n_train)
    for rows, g in per_sample_grads(model, data.x_train, data.y_train, mask, "train",
                                    args.grad_batch, args.device):
        if normalize:
            g = _unit(g)
        out[:, rows] = (test @ g.T).cpu()
    return out
