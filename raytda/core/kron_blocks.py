"""The pieces of factorized gradient features: how the total k is split between blocks,
which modules a weight can be factorized for, and the two kinds of block.

A :class:`KroneckerBlock` is one covered weight (with its absorbed bias) projected as
``P_rows G P_cols^T`` from the hooked a_t and g_t; a :class:`DenseBlock` is the trainable
parameters of one uncovered module, projected by a dense Gaussian. How they are found in a
model and driven through one hooked pass is :mod:`raytda.core.factorized`, which also
documents the math and the measurements behind the ``"equal"`` split rule.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from raytda.core.projection import GaussianProjector
from raytda.specs import SpecError

#: how the total k is split between blocks: weight of a block with n parameters
#: ("equal" is the default; see the module docstring for the measurements)
SPLIT_RULES = {"sqrt": math.sqrt, "equal": lambda n: 1.0, "params": float}



def split_k(k: int, sizes: list[int], rule: str = "equal") -> list[int]:
    """Integer dims k_l (sum = k, each 1 <= k_l <= sizes[l]) proportional to ``rule(size)``.

    A block never gets more dims than it has parameters; what a capped block cannot take
    goes to the others (water filling). Raises SpecError when k < number of blocks.
    """
    if rule not in SPLIT_RULES:
        raise SpecError(f"unknown k split rule {rule!r}; choose one of {sorted(SPLIT_RULES)}")
    k = min(k, sum(sizes))
    if k < len(sizes):
        raise SpecError(f"k={k} is smaller than the number of projected blocks ({len(sizes)}); "
                        f"raise k or pass uncovered='skip'")
    weight = [SPLIT_RULES[rule](n) for n in sizes]
    share = [0.0] * len(sizes)
    free = set(range(len(sizes)))
    left = float(k)
    while free:
        total = sum(weight[i] for i in free)
        capped = {i for i in free if left * weight[i] / total >= sizes[i]}
        if not capped:
            for i in free:
                share[i] = left * weight[i] / total
            break
        for i in capped:
            share[i] = float(sizes[i])
            left -= sizes[i]
        free -= capped
    dims = [max(1, min(n, int(s))) for s, n in zip(share, sizes)]
    # hand out what flooring (and the floor of 1) left over, largest remainders first
    order = sorted(range(len(sizes)), key=lambda i: share[i] - int(share[i]), reverse=True)
    for i in order:
        if sum(dims) >= k:
            break
        if dims[i] < sizes[i]:
            dims[i] += 1
    while sum(dims) > k:  # floors of 1 on tiny shares: take back from the largest
        i = max(range(len(dims)), key=lambda j: dims[j])
        dims[i] -= 1
    return dims


def kron_dims(k_block: int, rows: int, cols: int) -> tuple[int, int]:
    """(k_rows, k_cols) with k_rows * k_cols <= k_block, as equal as the matrix allows."""
    k_rows = max(1, min(rows, round(math.sqrt(k_block))))
    k_cols = max(1, min(cols, k_block // k_rows))
    k_rows = max(1, min(rows, k_block // k_cols))
    return k_rows, k_cols


def gaussian_factor(k: int, d: int, seed: int, device: torch.device) -> torch.Tensor:
    """(k, d) with N(0, 1/k) entries, the same for a seed on every machine (CPU draw).

    A side given as many dims as it has (k == d) is kept exactly: the identity. A random
    square matrix would only add variance (a 2-class head's output side, say)."""
    if k == d:
        return torch.eye(d, device=device)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return (torch.randn(k, d, generator=gen) / math.sqrt(k)).to(device)


def _conv1d_type() -> type | None:
    # A model holding a Hugging Face Conv1D has imported transformers already; never import
    # it here (seconds) for models that do not.
    mod = sys.modules.get("transformers.pytorch_utils")
    return getattr(mod, "Conv1D", None)


def factorizable_kind(module: nn.Module) -> str | None:
    """The kind of a module whose weight this file projects with Kronecker factors."""
    conv1d = _conv1d_type()
    if isinstance(module, nn.Linear):
        return "linear"
    if conv1d is not None and isinstance(module, conv1d):
        return "conv1d"
    if isinstance(module, nn.Conv2d) and module.groups == 1 and module.padding_mode == "zeros":
        return "conv2d"
    if isinstance(module, nn.Embedding) and module.max_norm is None \
            and not module.scale_grad_by_freq:
        return "embedding"
    return None


def rmsnorm_eps(module: nn.Module) -> float | None:
    """The epsilon of an RMS norm whose weight scales ``x / sqrt(mean(x^2) + eps)`` over
    the weight's trailing dims; None for any other module.

    Recognized: ``nn.RMSNorm`` and the RMSNorm classes Hugging Face models define for
    themselves (Llama's ``LlamaRMSNorm`` and its copies in Mistral, Qwen2, ...: a class
    named ``...RMSNorm`` holding one weight and ``variance_epsilon`` or ``eps``). Such a
    class is only taken once :func:`rmsnorm_probe_agrees` has checked its gradient on a
    probe input, as its forward is the model's own code.
    """
    if isinstance(module, nn.RMSNorm):
        if module.weight is None:
            return None
        return module.eps if module.eps is not None else torch.finfo(module.weight.dtype).eps
    if not type(module).__name__.endswith("RMSNorm"):
        return None
    own = dict(module.named_parameters(recurse=False))
    eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
    if set(own) != {"weight"} or not isinstance(eps, (int, float)):
        return None
    return float(eps)


def rms_normalized(x: torch.Tensor, width_dims: int, eps: float) -> torch.Tensor:
    """``x / sqrt(mean(x^2) + eps)`` over the last ``width_dims`` dims, in float32 at least
    (as Hugging Face's RMS norms compute it, whatever the model's dtype)."""
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    dims = tuple(range(-width_dims, 0))
    return xf * torch.rsqrt(xf.pow(2).mean(dims, keepdim=True) + eps)


def rmsnorm_probe_agrees(module: nn.Module, eps: float) -> bool:
    """Whether ``sum_t g_t * xhat_t`` is the module's weight gradient on a seeded probe.

    A model's own RMSNorm class may scale by ``weight`` or by ``1 + weight`` (Gemma; the
    same gradient) or do something else entirely; the probe tells, in one tiny pass. A
    module that disagrees is left to the vmapped pass, which is exact for any forward."""
    w = module.weight
    gen = torch.Generator().manual_seed(0)
    shape = (2, 3, *w.shape)
    x = torch.randn(shape, generator=gen).to(w.device, w.dtype)
    g = torch.randn(shape, generator=gen).to(w.device)
    with torch.enable_grad():
        out = module(x)
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            return False
        (got,) = torch.autograd.grad(out, w, g.to(out.dtype), allow_unused=True)
    if got is None:
        return False
    want = (g * rms_normalized(x, w.dim(), eps)).reshape(-1, *w.shape).sum(0)
    # float32 rounding differs by ~1e-6 relative; a different formula by order 1
    tol = 1e-3 if w.dtype == torch.float32 or w.dtype == torch.float64 else 5e-2
    return bool(torch.allclose(got.float(), want.float(), rtol=tol,
                               atol=tol * float(want.abs().max())))


def hooked_dense_kind(module: nn.Module) -> str | None:
    """The kind of a module whose per-sample gradient the hooked pass reads off exactly."""
    if isinstance(module, nn.LayerNorm):
        return "layernorm"
    eps = rmsnorm_eps(module)
    if eps is not None and module.weight.requires_grad and rmsnorm_probe_agrees(module, eps):
        return "rmsnorm"
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)) \
            and module.track_running_stats and module.running_mean is not None:
        return "batchnorm"
    return None


#: kinds whose output gradient g_t is the rows side of the weight as stored
G_ROWS = ("linear", "conv2d")


def layout(kind: str, weight: torch.Tensor) -> tuple[int, int]:
    """(d_g, d_a): widths of the output-gradient and input sides of a weight."""
    if kind == "linear":
        return weight.shape[0], weight.shape[1]
    if kind == "conv2d":
        return weight.shape[0], weight[0].numel()
    return weight.shape[1], weight.shape[0]  # conv1d (d_in, d_out); embedding (vocab, d)


@dataclass
class KroneckerBlock:
    """One covered weight (plus its absorbed bias): G (rows x cols) -> P_rows G P_cols^T.

    ``uses`` maps each module reading the weight to its kind; the kinds may differ (an
    embedding tied to an output head) but all lay G out the same way. ``with_weight`` is
    False for a bias-only block (a_t = (1,)); ``with_bias`` appends the bias's 1 to a_t.
    """

    name: str
    uses: dict[str, str]
    params: list[str]
    rows: int
    cols: int
    with_weight: bool
    with_bias: bool
    n_params: int
    k_rows: int = 0
    k_cols: int = 0
    p_rows: torch.Tensor | None = field(default=None, repr=False)
    p_cols: torch.Tensor | None = field(default=None, repr=False)
    offset: int = 0

    @property
    def kind(self) -> str:
        return "+".join(dict.fromkeys(self.uses.values()))

    @property
    def modules(self) -> list[str]:
        return list(self.uses)

    @property
    def dim(self) -> int:
        return self.k_rows * self.k_cols

    def _p_a(self, kind: str) -> torch.Tensor:
        return self.p_cols if kind in G_ROWS else self.p_rows  # type: ignore[return-value]

    def _p_g(self, kind: str) -> torch.Tensor:
        return self.p_rows if kind in G_ROWS else self.p_cols  # type: ignore[return-value]

    def project_input(self, kind: str, module: nn.Module, a: torch.Tensor, y: torch.Tensor,
                      batch: int) -> torch.Tensor:
        """P_a a_t (with the bias's 1 appended) for every position: (batch, T, k_a).

        ``y`` is the module's output (its shape gives the positions of a bias-only block)."""
        p = self._p_a(kind)
        if kind == "embedding":
            # one-hot x_t projected = column x_t of P_rows
            idx = a.reshape(batch, -1)
            out = F.embedding(idx, p.T)
            if module.padding_idx is not None:  # torch gives that row no gradient
                out = out * (idx != module.padding_idx).unsqueeze(-1).to(out.dtype)
            return out
        if not self.with_weight:  # bias-only block: a_t = (1,) at every position
            positions = y[0, 0].numel() if kind == "conv2d" else y[0, ..., 0].numel()
            return p[:, 0].expand(batch, positions, p.shape[0])
        n_in = p.shape[1] - int(self.with_bias)
        bias = p[:, n_in] if self.with_bias else None
        if kind == "conv2d":
            kernels = p[:, :n_in].reshape(p.shape[0], *module.weight.shape[1:])
            out = F.conv2d(a, kernels, bias, module.stride, module.padding, module.dilation)
            return out.flatten(2).transpose(1, 2)
        out = a.reshape(batch, -1, a.shape[-1]) @ p[:, :n_in].T
        return out if bias is None else out + bias

    def project_grad(self, kind: str, g: torch.Tensor, batch: int) -> torch.Tensor:
        """P_g g_t for every position: (batch, T, k_g)."""
        if kind == "conv2d":
            g = g.flatten(2).transpose(1, 2)
        return g.reshape(batch, -1, g.shape[-1]) @ self._p_g(kind).T

    def term(self, kind: str, pa: torch.Tensor, pg: torch.Tensor) -> torch.Tensor:
        """sum_t (P_rows u_t)(P_cols v_t)^T, flattened row-major: (batch, k_rows * k_cols)."""
        m = pg.transpose(1, 2) @ pa if kind in G_ROWS else pa.transpose(1, 2) @ pg
        return m.reshape(m.shape[0], -1)


@dataclass
class DenseBlock:
    """Trainable parameters of one module outside the factorization, projected densely.

    ``how``: "hooks" (LayerNorm / RMSNorm / BatchNorm, read off the hooked pass), "vmap" (a second,
    vmapped pass) or "skipped".
    """

    name: str
    kind: str
    params: list[str]
    n_params: int
    how: str
    k: int = 0
    projector: GaussianProjector | None = field(default=None, repr=False)
    offset: int = 0

    @property
    def dim(self) -> int:
        return 0 if self.how == "skipped" else self.k

    def project(self, grads: torch.Tensor) -> torch.Tensor:
        """(B, n_params) flattened gradients -> (B, k); the identity when k == n_params."""
        return grads if self.projector is None else self.projector.project(grads)

    def hooked_grad(self, module: nn.Module, x: torch.Tensor, g: torch.Tensor,
                    batch: int) -> torch.Tensor:
        """Per-sample gradient of the module's trainable (weight, bias), flattened:
        ``sum_t g_t * xhat_t`` and ``sum_t g_t`` over the positions t of each sample."""
        if self.kind == "layernorm":
            xhat = F.layer_norm(x, module.normalized_shape, None, None, module.eps)
            width = math.prod(module.normalized_shape)
            per_sample = lambda t: t.reshape(batch, -1, width).sum(1)  # noqa: E731
        elif self.kind == "rmsnorm":  # weight only: y = weight * xhat
            w = module.weight
            xhat = rms_normalized(x, w.dim(), rmsnorm_eps(module))  # type: ignore[arg-type]
            per_sample = lambda t: t.reshape(batch, -1, w.numel()).sum(1)  # noqa: E731
            return per_sample(g.to(xhat.dtype) * xhat).to(g.dtype)
        else:  # batchnorm in eval mode: running statistics, per-channel affine
            shape = (1, -1) + (1,) * (x.dim() - 2)
            xhat = (x - module.running_mean.reshape(shape)) \
                * torch.rsqrt(module.running_var.reshape(shape) + module.eps)
            per_sample = lambda t: t.reshape(batch, t.shape[1], -1).sum(2)  # noqa: E731
        parts = []
        if module.weight is not None and module.weight.requires_grad:
            parts.append(per_sample(g * xhat))
        if module.bias is not None and module.bias.requires_grad:
            parts.append(per_sample(g))
        return torch.cat(parts, dim=1)
