"""Exact TRAK features that skip the work an MLP's background inputs make pointless.

The first layer's per-sample weight gradient is ``delta x^T``. Most input features of a
sample sit at a background value (MNIST: ~80% of pixels are the blank value, 0 as pixels
in [0, 1], -0.4242 once normalized). Split each input into a per-feature background
vector ``v`` and a sparse rest, ``x = v + s``; then ``delta x^T = delta v^T + delta s^T``
and the projection of the first layer's gradient is

    sum_ij delta_i x_j P[row(i, j)] = delta @ R_v + sum_{ij: s_j != 0} delta_i s_j P[row(i, j)]

with ``R_v[i] = sum_j v_j P[row(i, j)]`` (out x k), computed once per projector. The
first term costs ``out`` rows instead of ``out * in``; the second skips every feature at
its background. (``v`` is each feature's most frequent value over a reference set, the
train split, zero where that ties; where it is 0 everywhere, ``R_v`` is left out.) Here:

- input features are ranked by how often they differ from ``v`` in the reference set; P
  is held with every other parameter's rows first, in their usual order, then the ``out``
  rows of ``R_v`` (when ``v`` is not all zero), then the rows of W1 grouped by input
  feature in rank order, so the rows a sample needs form a prefix;
- samples are taken in order of the last-ranked feature they use, so each batch needs
  only the prefix its own samples reach;
- each batch's gradient is written in that grouped layout up to the prefix (the ``R_v``
  columns hold ``delta``, the W1 columns ``delta s^T``), and projected with the prefix.

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
from raytda.core.linear_stack import linear_stack
from raytda.core.masks import MaskSpec, masks_for
from raytda.core.network import inner
from raytda.core.outputs import CLASSIFICATION, ModelOutput
from raytda.core.projection import GaussianProjector

# Below this fraction of skipped work, regrouping P costs more than it saves.
MIN_SAVING = 0.1


def background(x_ref: torch.Tensor) -> torch.Tensor:
    """Each input feature's most frequent value over ``x_ref`` (n, in): the ``v`` above.

    Any choice keeps the features exact; the most frequent value makes ``s`` sparsest.
    Zero wins ties, and a value seen once is no background (a feature whose values are all
    distinct gets 0), so inputs whose background is zero keep the plain layout, no ``R_v``.
    """
    mode = torch.mode(x_ref, dim=0).values
    more = (x_ref == mode).sum(dim=0) > (x_ref == 0).sum(dim=0).clamp_min(1)
    return torch.where(more, mode, torch.zeros_like(mode)).contiguous()


def _needed(x: torch.Tensor, rank: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Per sample: how many leading ranked features reach its last off-background one."""
    return ((x != v) * (rank + 1)).amax(dim=1)


def _batched_prefix_work(needed: torch.Tensor, batch_size: int) -> int:
    """Sum over batches (of samples sorted by need) of batch size x longest need."""
    srt = torch.sort(needed).values
    return sum(int(srt[i:i + batch_size][-1]) * len(srt[i:i + batch_size])
               for i in range(0, len(srt), batch_size))


class SparseInputProjection:
    """Projected per-sample gradients of an MLP, skipping rows its zero inputs cancel.

    Build with ``build`` (None when it does not apply or would not pay); then
    ``features`` gives what the dense features part (:mod:`raytda.features.dense`) gives
    without it.
    """

    def __init__(self, layout: list[tuple[nn.Linear, str]], projector: GaussianProjector,
                 order: torch.Tensor, v: torch.Tensor | None = None,
                 materialize: bool = True) -> None:
        # materialize=False: the layout only (``batches`` works, ``project`` does not), for
        # gradients that several projectors share (``for_projector``).
        self.layout = layout
        self.first = layout[0][0]
        self.rest = layout[1:]  # every parameter but W1, in module order
        self.layers = list(dict.fromkeys(layer for layer, _ in layout))
        n_in, n_out = self.first.in_features, self.first.out_features
        n_w1 = n_in * n_out
        self.n_rest = projector.n_params - n_w1
        self.order = order
        self.rank = torch.empty_like(order)
        self.rank[order] = torch.arange(n_in)
        self.v = torch.zeros(n_in) if v is None else v.to(torch.float32)
        self.v_ordered = self.v[order]
        # All-zero background: delta v^T = 0, so no R_v rows (the plain zero-input path).
        self.n_bg = n_out if bool((self.v != 0).any()) else 0
        self.n_head = self.n_rest + self.n_bg  # columns every batch has, before W1's prefix
        # Row of W1[i, j] in P is i * n_in + j; grouped, it moves to
        # n_head + rank(j) * n_out + i. Rows are drawn straight into place (no second copy
        # of P), leaving the n_bg rows of R_v to fill from the grouped W1 rows below.
        w1_rows = (torch.arange(n_out)[None, :] * n_in + order[:, None]).reshape(-1)
        source = torch.cat([torch.arange(n_w1, projector.n_params), w1_rows])
        dest = torch.cat([torch.arange(self.n_rest), self.n_head + torch.arange(n_w1)])
        where = torch.empty_like(source)
        where[source] = dest
        self.projector = projector
        self.flops = 0.0  # multiply-adds x 2 actually done by ``project``
        self.p_grouped: torch.Tensor | None = None
        if not materialize:
            return
        self.p_grouped = torch.empty(projector.n_params + self.n_bg, projector.k,
                                     device=projector.device, dtype=projector.dtype)
        projector.scatter_into(self.p_grouped, where)
        if self.n_bg:
            # R_v[i] = sum_j v_j P[row(i, j)]: the grouped rows are (rank, i) ordered.
            w1 = self.p_grouped[self.n_head:].view(n_in, n_out * projector.k)
            r_v = self.v_ordered.to(w1.device, w1.dtype) @ w1
            self.p_grouped[self.n_rest:self.n_head] = r_v.view(n_out, projector.k)

    def for_projector(self, projector: GaussianProjector) -> SparseInputProjection:
        """The same layout (background, ranks) for another projector of the same shape:
        batches from either project with both, so gradients can be shared."""
        return SparseInputProjection(self.layout, projector, self.order, self.v)

    @classmethod
    def build(cls, model: nn.Module, projector: GaussianProjector, x_ref: torch.Tensor,
              batch_size: int, materialize: bool = True) -> SparseInputProjection | None:
        """The sparse path for ``model`` with background and ranks from ``x_ref``, or None
        if it does not apply or would not pay."""
        layout = linear_layout(model)
        if (layout is None or not isinstance(projector, GaussianProjector)
                or not projector.resident or layout[0][1] != "weight"):
            return None
        first = layout[0][0]
        # the sums above hold for the layer that multiplies the model's input itself
        stack = linear_stack(inner(model))
        if stack is None or first is not stack.input_layer or x_ref.ndim != 2 \
                or x_ref.shape[1] != first.in_features or x_ref.shape[0] == 0:
            return None
        v = background(x_ref)
        freq = (x_ref != v).sum(dim=0)
        order = torch.argsort(freq, descending=True, stable=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(first.in_features)
        w1_work = _batched_prefix_work(_needed(x_ref, rank, v), batch_size) * first.out_features
        bg_work = x_ref.shape[0] * first.out_features * bool((v != 0).any())
        skipped = x_ref.shape[0] * first.weight.numel() - w1_work - bg_work
        if skipped < MIN_SAVING * x_ref.shape[0] * projector.n_params:
            return None
        return cls(layout, projector, order, v, materialize)

    def batches(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                mask: MaskSpec | None, split: str, batch_size: int, device: str = "cpu",
                output: ModelOutput = CLASSIFICATION, offset: int = 0
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (sample indices, G) with G in the grouped layout, cut to the batch's prefix.

        ``offset`` is the split row number of ``x[0]`` (per-sample masks are keyed by it)."""
        model = model.to(device)
        needed = _needed(x, self.rank, self.v)
        by_need = torch.argsort(needed, stable=True)
        order = self.order.to(device)
        v_ordered = self.v_ordered.to(device)
        sizes = getattr(model, "mask_sizes", ())
        n_out = self.first.out_features
        for start in range(0, x.shape[0], batch_size):
            idx = by_need[start:start + batch_size]
            r = int(needed[idx[-1]])
            masks, _ = masks_for(mask, sizes, split, idx + offset, device)
            inputs, deltas = linear_parts(model, self.layers, x[idx].to(device),
                                          y[idx].to(device), masks, output)
            b = idx.shape[0]
            delta = deltas[self.first]
            g = torch.empty(b, self.n_head + r * n_out, dtype=delta.dtype, device=device)
            write_linear_grads(self.rest, inputs, deltas, g[:, :self.n_rest])
            sparse = inputs[self.first][:, order[:r]]
            if self.n_bg:  # x = v + s: delta times R_v's rows, then delta s^T
                g[:, self.n_rest:self.n_head] = delta
                sparse = sparse - v_ordered[:r]
            torch.mul(sparse.unsqueeze(2), delta.unsqueeze(1),
                      out=g[:, self.n_head:].view(b, r, n_out))
            yield idx, g

    def project(self, g: torch.Tensor) -> torch.Tensor:
        """G (grouped layout, any prefix) -> (batch, k)."""
        if self.p_grouped is None:
            raise RuntimeError("this SparseInputProjection holds the layout only; "
                               "use for_projector(projector) to project")
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
