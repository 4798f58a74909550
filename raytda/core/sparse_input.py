"""Exact TRAK features that skip the work an MLP's zero inputs make pointless.

The first layer's per-sample weight gradient is ``delta x^T``: wherever a sample's input
feature x_j is exactly zero (MNIST: ~80% of pixels), the whole column W1[:, j] of its
gradient is zero and the matching rows of P add nothing to ``G @ P``. The dense product
pays for them anyway, and the first layer holds ~92% of MNIST-MLP's parameters. Here:

- input features are ranked by how often they are non-zero in a reference set (the
  train split); P is held with every other parameter's rows first, in their usual order,
  then the rows of W1 grouped by input feature in rank order, so the rows a sample needs
  form a prefix of P;
- samples are taken in order of the last-ranked feature they use, so each batch needs
  only the prefix its own samples reach;
- each batch's gradient is written in that grouped layout up to the prefix, and
  projected with the prefix of P.

The sum is the same with the zero terms left out, so features equal the dense path's up
to float32 rounding. Used only on the linear fast path with P resident, and only when it
skips at least ``MIN_SAVING`` of the multiply-adds.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from raytda.core import gemm
from raytda.core.grads import linear_layout, linear_parts, write_linear_grads
from raytda.core.masks import MaskSpec, masks_for
from raytda.core.network import inner
from raytda.core.outputs import CLASSIFICATION, ModelOutput
from raytda.core.projection import GaussianProjector

# Below this fraction of skipped work, regrouping P costs more than it saves.
MIN_SAVING = 0.1


def _needed(x: torch.Tensor, rank: torch.Tensor) -> torch.Tensor:
    """Per sample: how many leading ranked features reach its last non-zero one."""
    return ((x != 0) * (rank + 1)).amax(dim=1)


def _batched_prefix_work(needed: torch.Tensor, batch_size: int) -> int:
    """Sum over batches (of samples sorted by need) of batch size x longest need."""
    srt = torch.sort(needed).values
    return sum(int(srt[i:i + batch_size][-1]) * len(srt[i:i + batch_size])
               for i in range(0, len(srt), batch_size))


class SparseInputProjection:
    """Projected per-sample gradients of an MLP, skipping rows its zero inputs cancel.

    Build with ``build`` (None when it does not apply or would not pay); then
    ``features`` gives what ``raytda.core.trak.project_features`` gives on the dense path.
    """

    def __init__(self, layout: list[tuple[nn.Linear, str]], projector: GaussianProjector,
                 order: torch.Tensor) -> None:
        self.first = layout[0][0]
        self.rest = layout[1:]  # every parameter but W1, in module order
        self.layers = list(dict.fromkeys(layer for layer, _ in layout))
        n_in, n_out = self.first.in_features, self.first.out_features
        n_w1 = n_in * n_out
        self.n_rest = projector.n_params - n_w1
        self.order = order
        self.rank = torch.empty_like(order)
        self.rank[order] = torch.arange(n_in)
        # Row of W1[i, j] in P is i * n_in + j; grouped, it moves to n_rest + rank(j) * n_out + i.
        w1_rows = (torch.arange(n_out)[None, :] * n_in + order[:, None]).reshape(-1)
        self.projector = projector
        self.p_grouped = projector.matrix(torch.cat([torch.arange(n_w1, projector.n_params),
                                                     w1_rows]))
        self.flops = 0.0  # multiply-adds x 2 actually done by ``project``

    @classmethod
    def build(cls, model: nn.Module, projector: GaussianProjector, x_ref: torch.Tensor,
              batch_size: int) -> SparseInputProjection | None:
        """The sparse path for ``model`` with ranks from ``x_ref``, or None if not worth it."""
        layout = linear_layout(model)
        if (layout is None or not isinstance(projector, GaussianProjector)
                or not projector.resident or layout[0][1] != "weight"):
            return None
        first = layout[0][0]
        hidden = getattr(inner(model), "hidden", None)
        if hidden is None or first is not hidden[0] or x_ref.ndim != 2 \
                or x_ref.shape[1] != first.in_features or x_ref.shape[0] == 0:
            return None
        freq = (x_ref != 0).sum(dim=0)
        order = torch.argsort(freq, descending=True, stable=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(first.in_features)
        w1_work = _batched_prefix_work(_needed(x_ref, rank), batch_size) * first.out_features
        skipped = x_ref.shape[0] * first.weight.numel() - w1_work
        if skipped < MIN_SAVING * x_ref.shape[0] * projector.n_params:
            return None
        return cls(layout, projector, order)

    def batches(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                mask: MaskSpec | None, split: str, batch_size: int, device: str = "cpu",
                output: ModelOutput = CLASSIFICATION, offset: int = 0
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (sample indices, G) with G in the grouped layout, cut to the batch's prefix.

        ``offset`` is the split row number of ``x[0]`` (per-sample masks are keyed by it)."""
        model = model.to(device)
        needed = _needed(x, self.rank)
        by_need = torch.argsort(needed, stable=True)
        order = self.order.to(device)
        sizes = getattr(model, "mask_sizes", ())
        n_out = self.first.out_features
        for start in range(0, x.shape[0], batch_size):
            idx = by_need[start:start + batch_size]
            r = int(needed[idx[-1]])
            masks, _ = masks_for(mask, sizes, split, idx + offset, device)
            inputs, deltas = linear_parts(model, self.layers, x[idx].to(device),
                                          y[idx].to(device), masks, output)
            b = idx.shape[0]
            g = torch.empty(b, self.n_rest + r * n_out, dtype=deltas[self.first].dtype,
                            device=device)
            write_linear_grads(self.rest, inputs, deltas, g[:, :self.n_rest])
            torch.mul(inputs[self.first][:, order[:r]].unsqueeze(2),
                      deltas[self.first].unsqueeze(1),
                      out=g[:, self.n_rest:].view(b, r, n_out))
            yield idx, g

    def project(self, g: torch.Tensor) -> torch.Tensor:
        """G (grouped layout, any prefix) -> (batch, k)."""
        p = self.p_grouped[: g.shape[1]]
        self.flops += 2.0 * g.shape[0] * g.shape[1] * p.shape[1]
        g = g.to(device=p.device, dtype=p.dtype)
        return gemm.matmul(g, p, self.projector.cpu_gemm)

    def features(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 mask: MaskSpec | None, split: str, batch_size: int, device: str = "cpu",
                 output: ModelOutput = CLASSIFICATION, offset: int = 0) -> torch.Tensor:
        """(n, k) projected per-sample gradients, rows in the order of ``x`` (``offset``:
        the split row number of ``x[0]``, which keys per-sample masks)."""
        out = torch.empty(x.shape[0], self.projector.k, dtype=torch.float32)
        for idx, g in self.batches(model, x, y, mask, split, batch_size, device, output,
                                   offset):
            out[idx] = self.project(g).float().cpu()
        return out
