"""Per-sample gradients of the model output, in batches, via torch.func."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from raytda.core.masks import MaskSpec, masks_for
from raytda.core.outputs import margin, one_minus_p


def param_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in model.named_parameters()}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _output_fn(model: nn.Module):
    def f(params, x, y, masks):
        batch_masks = None if masks is None else tuple(m.unsqueeze(0) for m in masks)
        logits = functional_call(model, params, (x.unsqueeze(0),), {"masks": batch_masks})
        return margin(logits, y.unsqueeze(0))[0]
    return f


def per_sample_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                     mask: MaskSpec | None = None, split: str = "train",
                     batch_size: int = 256, device: str = "cpu"
                     ) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield (rows, G) with G[b] = flattened d f(x_b) / d params, params in module order.

    Masks (when given) are applied exactly as the member defines them, so a sample's
    gradient does not depend on which batch it falls in.
    """
    model = model.to(device)
    params = param_dict(model)
    f = _output_fn(model)
    sizes = getattr(model, "mask_sizes", ())
    n = x.shape[0]
    for start in range(0, n, batch_size):
        rows = slice(start, min(start + batch_size, n))
        xb, yb = x[rows].to(device), y[rows].to(device)
        masks, batched = masks_for(mask, sizes, split, torch.arange(rows.start, rows.stop), device)
        in_dims = (None, 0, 0, 0 if batched else None)
        g = vmap(grad(f), in_dims=in_dims)(params, xb, yb, masks)
        yield rows, torch.cat([t.reshape(t.shape[0], -1) for t in g.values()], dim=1)


@torch.no_grad()
def forward_outputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    mask: MaskSpec | None = None, split: str = "train",
                    batch_size: int = 1024, device: str = "cpu"
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(margins, Q) for every sample under the member's masks; forward passes only."""
    model = model.to(device).eval()
    sizes = getattr(model, "mask_sizes", ())
    margins, qs = [], []
    for start in range(0, x.shape[0], batch_size):
        stop = min(start + batch_size, x.shape[0])
        masks, _ = masks_for(mask, sizes, split, torch.arange(start, stop), device)
        logits = model(x[start:stop].to(device), masks=masks)
        yb = y[start:stop].to(device)
        margins.append(margin(logits, yb).cpu())
        qs.append(one_minus_p(logits, yb).cpu())
    return torch.cat(margins), torch.cat(qs)
