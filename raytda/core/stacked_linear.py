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


@torch.library.custom_op("raytda::stacked_linears", mutates_args=())
def _linears(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """(M, R, in) rows, (M, out, in) weights, (M, out) biases -> (M, R, out): model i's
    ``linear(x[i], w[i], b[i])``, bit for bit.

    ``linear`` alone is ``addmm(b, x, w^T)`` (``mm`` without bias); ``baddbmm``/``bmm``
    run the same GEMM per model in one call (measured bit-identical to per-model
    ``addmm``/``mm`` with torch 2.13's MKL for MNIST-MLP's three layer shapes, and by the
    tests' training runs), without M Python calls and a ``stack`` copy of the outputs."""
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
    dx = torch.bmm(g, w) if need_x else None  # (M, R, in)
    dw = torch.bmm(g.transpose(1, 2), x) if need_w else None  # (M, out, in)
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
