"""``nn.Linear`` layers of M stacked models, bit for bit as each model's own layers.

:class:`raytda.core.stacked.StackedTrainer` runs M models' forward under one
``torch.func.vmap`` over the model axis. vmap's own rule for ``linear`` (a matmul, then a
bias add) rounds differently from ``linear`` alone, and training amplifies a last-bit
difference into a different model (measured on MNIST-MLP: 5e-2 in weights after 20
epochs). Here every ``nn.Linear`` is routed through a custom op (``_linear``) whose vmap
rule runs M models' ``addmm`` as one ``baddbmm`` (``_linears``), with a backward that
forms each model's gradients as autograd forms them for ``linear`` alone. Shapes: M
models, R rows (a batch, its positions folded in, as ``linear`` folds them), ``in`` and
``out`` features.
"""

from __future__ import annotations

import torch
from torch import nn


def _batched(t: torch.Tensor | None, dim: int | None, m: int) -> torch.Tensor | None:
    """A vmap operand with its model axis first (a shared one expanded, not copied)."""
    if t is None:
        return None
    return t.movedim(dim, 0) if dim is not None else t.expand(m, *t.shape)


@torch.library.custom_op("raytda::stacked_linear", mutates_args=())
def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """``F.linear``; under vmap, M models' linears as one batched GEMM (``_linear_vmap``)."""
    return torch.nn.functional.linear(x, w, b)


@_linear.register_vmap
def _linear_vmap(info, in_dims, x, w, b):
    """M models' ``linear``: rows folded to (M, R, in) as ``linear`` folds them, then
    :func:`_linears` (a batched GEMM whose backward is each model's own, see there).
    Shared weights (a LoRA pack's frozen base) are expanded without a copy."""
    m = info.batch_size
    x, w, b = (_batched(t, d, m) for t, d in zip((x, w, b), in_dims))
    out = _linears(x.reshape(m, -1, x.shape[-1]), w, b)  # (M, R, out)
    return out.reshape(*x.shape[:-1], w.shape[1]), 0


# torch's CPU bmm/baddbmm run their own loop for matrices of fewer multiply-adds than
# this (contraction x rows x columns), which rounds differently from mm (measured: rows 5,
# in 7, out 4); from it on they call MKL's GEMM, as mm does.
_BATCHED_FROM = 400


def _batched_is_exact(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether ``bmm`` gives each model the bits of its own ``mm`` for these operands:
    measured on the CPU at or above ``_BATCHED_FROM``; not measured elsewhere (cuBLAS may
    pick another kernel for a batch), so there each model keeps its own call."""
    return x.device.type == "cpu" and x.shape[1] * x.shape[2] * w.shape[1] >= _BATCHED_FROM


def _per_model(op, *operands: torch.Tensor) -> torch.Tensor:
    """``op`` on each model's slices of the (M, ...) operands, stacked."""
    return torch.stack([op(*parts) for parts in zip(*(t.unbind(0) for t in operands))])


@torch.library.custom_op("raytda::stacked_linears", mutates_args=())
def _linears(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """(M, R, in) rows, (M, out, in) weights, (M, out) biases -> (M, R, out): model i's
    ``linear(x[i], w[i], b[i])``, bit for bit.

    ``linear`` alone is ``addmm(b, x, w^T)`` (``mm`` without bias); ``baddbmm``/``bmm``
    run the same GEMM per model in one call (measured bit-identical to per-model
    ``addmm``/``mm`` with torch 2.13's MKL for MNIST-MLP's three layer shapes, and by the
    tests' training runs), without M Python calls and a ``stack`` copy of the outputs.
    Where that is not known to hold (``_batched_is_exact``), each model's own call."""
    if not _batched_is_exact(x, w):
        if b is None:
            return _per_model(lambda xi, wi: torch.mm(xi, wi.t()), x, w)
        return _per_model(lambda xi, wi, bi: torch.addmm(bi, xi, wi.t()), x, w, b)
    if b is None:
        return torch.bmm(x, w.transpose(1, 2))
    return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))


def _linears_setup(ctx, inputs, output) -> None:
    x, w, b = inputs
    ctx.save_for_backward(x, w)
    ctx.has_bias = b is not None


def _linears_backward(ctx, g: torch.Tensor):
    """The gradients autograd computes for ``addmm(b, x, w^T)`` alone, batched over M.

    With ``w`` row-major, autograd alone forms dW = g^T x directly in W's (out, in)
    layout and dx = g W; db sums g over the rows. Written here as ``bmm`` of the same
    operands, so each model's gradient has the same bits and lands in a fresh (M, out,
    in) tensor that the stacked leaf takes as its gradient without a copy (autograd's
    own ``baddbmm`` backward would form x^T g and leave a transposed gradient to copy)."""
    x, w = ctx.saved_tensors
    need_x, need_w, need_b = ctx.needs_input_grad
    gt = g.transpose(1, 2)
    if _batched_is_exact(x, w):
        dx = torch.bmm(g, w) if need_x else None  # (M, R, in)
        dw = torch.bmm(gt, x) if need_w else None  # (M, out, in)
    else:
        dx = _per_model(torch.mm, g, w) if need_x else None
        dw = _per_model(torch.mm, gt, x) if need_w else None
    db = g.sum(1) if ctx.has_bias and need_b else None  # (M, out)
    return dx, dw, db


_linears.register_autograd(_linears_backward, setup_context=_linears_setup)


class StackedLinears:
    """Routes every ``nn.Linear`` of a module through ``_linear`` (bit-exact under vmap)
    until ``remove``; the module's own parameters are read at each call, so
    ``functional_call``'s substitutes are used."""

    def __init__(self, module: nn.Module) -> None:
        self.mods = [m for m in module.modules() if type(m) is nn.Linear]
        for mod in self.mods:
            mod.forward = lambda x, mod=mod: _linear(x, mod.weight, mod.bias)

    def remove(self) -> None:
        for mod in self.mods:
            del mod.forward  # back to the class's forward
