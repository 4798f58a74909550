"""Grad-Dot and Grad-Cos: inner products of full (unprojected) per-sample gradients."""

from __future__ import annotations

import torch
from torch import nn

from raytda.core.args import ComputeArgs
from raytda.core.grads import samples_grads
from raytda.core.masks import MaskSpec
from raytda.core.outputs import CLASSIFICATION, ModelOutput


def _unit(g: torch.Tensor) -> torch.Tensor:
    return g / g.norm(dim=1, keepdim=True).clamp_min(torch.finfo(g.dtype).tiny)


def gradsim_block(model: nn.Module, data, mask: MaskSpec | None, normalize: bool,
                  args: ComputeArgs, output: ModelOutput = CLASSIFICATION) -> torch.Tensor:
    """(m x n) matrix of g(test)^T g(train), with unit-normalized gradients if asked."""
    def grads(samples, split):
        return samples_grads(model, samples, mask, split, args.grad_batch, args.device, output)

    test = torch.cat([g for _, g in grads(data.test, "test")])
    if normalize:
        test = _unit(test)
    out = torch.empty(data.n_test, data.n_train)
    for rows, g in grads(data.train, "train"):
        if normalize:
            g = _unit(g)
        out[:, rows] = (test @ g.T).cpu()
    return out
