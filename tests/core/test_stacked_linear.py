"""The stacked linear layers: under vmap over M models, each model's output and its
gradients (input, weight, bias) equal ``F.linear`` with autograd for that model alone.

Tolerance: none. Each model's GEMM is the same call on the same operands as alone
(measured bit-identical with this CPU's MKL; ``tests/core/test_stacked.py`` checks the same
through whole training runs); a wrong transpose or a summed-over-models gradient would
be off by O(1). The shapes keep each model's slices 64-byte aligned, as a fresh tensor
is: MKL's small GEMMs round by alignment (measured: ``linear`` on ``x[1]`` of a (3, 5, 7)
tensor differs from ``linear`` on its clone by 5e-7), so a pack whose per-model slices
are unaligned may differ from the alone model in the last bit.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from raytda.core.stacked_linear import StackedLinears

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def stacked_and_alone(bias: bool, shared_weight: bool, rows: int, d_in: int, d_out: int):
    m = 3
    gen = torch.Generator().manual_seed(0)
    layer = nn.Linear(d_in, d_out, bias=bias)
    x = torch.randn(m, rows, d_in, generator=gen, requires_grad=True)
    w = torch.randn(d_out, d_in, generator=gen) if shared_weight else \
        torch.randn(m, d_out, d_in, generator=gen)
    w.requires_grad_(not shared_weight)
    b = torch.randn(m, d_out, generator=gen, requires_grad=True) if bias else None
    g = torch.randn(m, rows, d_out, generator=gen)

    params = {"weight": w}
    dims = {"weight": None if shared_weight else 0}
    if bias:
        params["bias"], dims["bias"] = b, 0
    patch = StackedLinears(layer)
    try:
        out = torch.func.vmap(lambda p, xi: torch.func.functional_call(layer, p, (xi,)),
                              in_dims=(dims, 0))(params, x)
    finally:
        patch.remove()
    out.backward(g)
    got = [out.detach(), x.grad] + ([] if shared_weight else [w.grad]) + ([b.grad] if bias else [])

    want = []
    for i in range(m):
        xi = x[i].detach().clone().requires_grad_(True)
        wi = (w if shared_weight else w[i]).detach().clone().requires_grad_(not shared_weight)
        bi = b[i].detach().clone().requires_grad_(True) if bias else None
        yi = torch.nn.functional.linear(xi, wi, bi)
        yi.backward(g[i])
        want.append([yi.detach(), xi.grad] + ([] if shared_weight else [wi.grad])
                    + ([bi.grad] if bias else []))
    want = [torch.stack(parts) for parts in zip(*want)]
    return got, want


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shared_weight", [False, True])
@pytest.mark.parametrize("shape", [(4, 4, 16), (32, 16, 16)], ids=["per-model", "batched"])
def test_each_model_gets_what_linear_alone_gives(bias, shared_weight, shape):
    """Below 400 multiply-adds a matrix each model keeps its own call, from there on one
    batched GEMM (``_BATCHED_FROM``): both paths give each model its own bits."""
    got, want = stacked_and_alone(bias, shared_weight, *shape)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.shape == b.shape
        assert torch.equal(a, b)


def test_the_patch_is_removed():
    layer = nn.Linear(3, 2)
    patch = StackedLinears(layer)
    assert "forward" in vars(layer)
    patch.remove()
    assert "forward" not in vars(layer)
