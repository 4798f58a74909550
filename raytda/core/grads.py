"""Per-sample gradients of the model output, in batches.

Two ways to the same numbers:

- general: ``torch.func.vmap(grad(f))`` over the batch, for any model;
- linear fast path, for models built only from ``nn.Linear`` layers that treat samples
  independently (the paper's MLPs, a user's ``nn.Sequential`` of Linear, ReLU and
  Dropout; :mod:`raytda.core.linear_stack` says which), in eval mode: one batched
  forward and backward give
  every layer's input ``a`` and output gradient ``delta`` per sample, and the per-sample
  weight gradient is the outer product ``delta a^T`` (bias: ``delta``), written straight
  into the output. This skips vmap's per-parameter gradient tensors and the copy that
  concatenates them, which on a 2-core CPU cost more than the gradients themselves.

Both return G with rows = samples and columns = the *trainable* parameters (those with
``requires_grad``) flattened in ``model.named_parameters()`` order: every parameter of a
plain model, only the adapter of a LoRA member, which is what makes LoRA members cheap to
serve. What is differentiated is a ``ModelOutput`` (the classification margin by default,
the sequence log-likelihood for generative settings).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from raytda.core.batch import Batch, add_batch_dim, vmap_view
from raytda.core.masks import MaskSpec, masks_for
from raytda.core.outputs import CLASSIFICATION, ModelOutput

log = logging.getLogger(__name__)


def trainable_params(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters gradients are taken with respect to (detached), in module order."""
    return {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}


def n_params(model: nn.Module) -> int:
    """Total number of parameters, trainable or not."""
    return sum(p.numel() for p in model.parameters())


def n_trainable(model: nn.Module) -> int:
    """Number of trainable parameters: the width of a per-sample gradient."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _output_fn(model: nn.Module, output: ModelOutput):
    # Only the trainable parameters are passed; functional_call takes the frozen ones (the
    # base model under an adapter) from the module itself.
    def f(params, x, y, masks):
        batch_masks = None if masks is None else tuple(m.unsqueeze(0) for m in masks)
        logits = functional_call(model, params, (add_batch_dim(x),), {"masks": batch_masks})
        return output.f(logits, y.unsqueeze(0))[0]
    return f


def linear_layout(model: nn.Module) -> list[tuple[nn.Linear, str]] | None:
    """[(layer, 'weight' | 'bias')] in named_parameters order, if the fast path applies.

    Applies to a :class:`~raytda.core.network.Network` in eval mode (no batch statistics,
    dropout only through explicit masks) with the default forward, whose module is a
    stack of ``nn.Linear`` layers with row-wise steps between them
    (:func:`raytda.core.linear_stack.linear_stack`: found by tracing the forward, not by
    the module's class) and whose every parameter is a trainable weight or bias of one
    of those layers. Anything else returns None and takes the general vmap path.
    """
    from raytda.core.linear_stack import linear_stack
    from raytda.core.network import Network

    if not isinstance(model, Network) or not model.calls_module or model.training \
            or not all(p.requires_grad for p in model.parameters()):
        return None
    modules = dict(model.named_modules())
    layout: list[tuple[nn.Linear, str]] = []
    for name, _ in model.named_parameters():
        owner, _, leaf = name.rpartition(".")
        layer = modules.get(owner)
        if not isinstance(layer, nn.Linear) or leaf not in ("weight", "bias"):
            return None
        layout.append((layer, leaf))
    stack = linear_stack(model.module)
    # every called layer has a weight, so this also rules out a layer never called
    if stack is None or {layer for layer, _ in layout} != set(stack.layers):
        return None
    return layout


class NotRowWise(RuntimeError):
    """A layer's input is not (batch, in_features): the linear fast path does not apply."""


def linear_parts(model: nn.Module, layers: list[nn.Linear], x: torch.Tensor, y: torch.Tensor,
                 masks: tuple[torch.Tensor, ...] | None, output: ModelOutput = CLASSIFICATION
                 ) -> tuple[dict[nn.Linear, torch.Tensor], dict[nn.Linear, torch.Tensor]]:
    """Per-sample (input a, output gradient delta) of each layer, from one batched pass.

    The per-sample gradient of a layer's weight is ``delta a^T`` and of its bias ``delta``.
    """
    inputs: dict[nn.Linear, torch.Tensor] = {}
    outputs: dict[nn.Linear, torch.Tensor] = {}

    def hook(layer: nn.Module, args: tuple, out: torch.Tensor) -> None:
        if layer in inputs:  # a layer applied twice would need summed outer products
            raise RuntimeError("linear fast path: layer used more than once")
        if args[0].dim() != 2 or args[0].shape[0] != x.shape[0]:
            # (batch, seq, in): the weight gradient would sum over positions
            raise NotRowWise(f"linear fast path: a layer's input has shape "
                             f"{tuple(args[0].shape)}, not (batch, in_features)")
        inputs[layer] = args[0].detach()
        outputs[layer] = out

    handles = [layer.register_forward_hook(hook) for layer in layers]
    try:
        with torch.enable_grad():
            # Gradients are taken w.r.t. layer outputs only, so nothing lands in .grad;
            # x asks for grad so those outputs are in the graph even with frozen weights.
            logits = model(x.detach().requires_grad_(True), masks=masks)
            f = output.f(logits, y)
            deltas = torch.autograd.grad(f.sum(), [outputs[layer] for layer in layers])
    finally:
        for h in handles:
            h.remove()
    return inputs, dict(zip(layers, deltas))


def write_linear_grads(layout: list[tuple[nn.Linear, str]], inputs: dict[nn.Linear, torch.Tensor],
                       deltas: dict[nn.Linear, torch.Tensor], out: torch.Tensor) -> None:
    """Fill ``out`` (batch, width) with the gradients of ``layout``'s parameters, in order."""
    b, off = out.shape[0], 0
    for layer, leaf in layout:
        d = deltas[layer]
        if leaf == "weight":
            n = layer.weight.numel()
            dest = out[:, off:off + n].view(b, layer.out_features, layer.in_features)
            torch.mul(d.unsqueeze(2), inputs[layer].unsqueeze(1), out=dest)
        else:
            n = layer.out_features
            out[:, off:off + n].copy_(d)
        off += n


def _linear_grads(model: nn.Module, layout: list[tuple[nn.Linear, str]], x: torch.Tensor,
                  y: torch.Tensor, masks: tuple[torch.Tensor, ...] | None,
                  width: int, output: ModelOutput) -> torch.Tensor:
    """G (batch, width) for the linear fast path (see module docstring)."""
    layers = list(dict.fromkeys(layer for layer, _ in layout))
    inputs, deltas = linear_parts(model, layers, x, y, masks, output)
    out = torch.empty(x.shape[0], width, dtype=deltas[layers[0]].dtype, device=x.device)
    write_linear_grads(layout, inputs, deltas, out)
    return out


def _loop_grads(model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor | Batch,
                y: torch.Tensor, masks: tuple[torch.Tensor, ...] | None, batched: bool,
                output: ModelOutput) -> torch.Tensor:
    """Per-sample gradients by plain autograd, one sample at a time (the vmap fallback)."""
    leaves = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for b in range(x.shape[0]):
        mb = None if masks is None else tuple((m[b] if batched else m).unsqueeze(0)
                                              for m in masks)
        with torch.enable_grad():
            f = output.f(model(x[b:b + 1], masks=mb), y[b:b + 1])[0]
            g = torch.autograd.grad(f, leaves, allow_unused=True)
        rows.append(torch.cat([(gi if gi is not None else torch.zeros_like(p)).reshape(-1)
                               for gi, p in zip(g, leaves)]))
    return torch.stack(rows)


def per_sample_grads(model: nn.Module, x: torch.Tensor | Batch, y: torch.Tensor,
                     mask: MaskSpec | None = None, split: str = "train",
                     batch_size: int = 256, device: str = "cpu",
                     output: ModelOutput = CLASSIFICATION, start: int = 0
                     ) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield (rows, G) with G[b] = flattened d f(x_b) / d trainable params (module order).

    ``model`` is a :class:`raytda.core.network.Network`. Masks (when given) are applied
    exactly as the member defines them, so a sample's gradient does not depend on which
    batch it falls in; ``start`` is the row number of ``x[0]`` in its split (per-sample
    masks are keyed by it). ``x`` is a tensor or a :class:`~raytda.core.batch.Batch` of
    named tensors (dict inputs), sliced by rows alike. Each G is a fresh tensor the
    caller may keep. ``batch_size`` trades memory (batch x n_params floats) for speed;
    a few hundred samples is enough to keep the CPU busy.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model = model.to(device).eval()
    width = n_trainable(model)
    if width == 0:
        raise ValueError("the model has no trainable parameters to take gradients of")
    layout = linear_layout(model) if isinstance(x, torch.Tensor) else None
    sizes = getattr(model, "mask_sizes", ())
    n = x.shape[0]
    params = trainable_params(model) if layout is None else {}
    g_fn = grad(_output_fn(model, output))
    use_vmap = True
    for b0 in range(0, n, batch_size):
        rows = slice(b0, min(b0 + batch_size, n))
        xb, yb = x[rows].to(device), y[rows].to(device)
        index = torch.arange(start + rows.start, start + rows.stop)
        masks, batched = masks_for(mask, sizes, split, index, device)
        if layout is not None:
            try:
                g = _linear_grads(model, layout, xb, yb, masks, width, output)
            except NotRowWise as e:
                log.info("%s; vmap instead", e)
                layout, params = None, trainable_params(model)
            else:
                yield rows, g
                continue
        if use_vmap:
            try:
                # a Batch goes in as its dict: vmap maps over every tensor's rows
                g = vmap(g_fn, in_dims=(None, 0, 0, 0 if batched else None))(
                    params, vmap_view(xb), yb, masks)
                yield rows, torch.cat([t.reshape(t.shape[0], -1) for t in g.values()], dim=1)
                continue
            except (RuntimeError, NotImplementedError) as e:
                # Models with data-dependent control flow or ops without a batching rule
                # (some library attention code) cannot be vmapped: same numbers, one
                # sample at a time.
                log.info("vmap over %s failed (%s); per-sample autograd loop instead",
                         type(model).__name__, str(e).splitlines()[0] if str(e) else e)
                use_vmap = False
        yield rows, _loop_grads(model, params, xb, yb, masks, batched, output)


@torch.no_grad()
def forward_outputs(model: nn.Module, x: torch.Tensor | Batch, y: torch.Tensor,
                    mask: MaskSpec | None = None, split: str = "train",
                    batch_size: int = 1024, device: str = "cpu",
                    output: ModelOutput = CLASSIFICATION, start: int = 0
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(f, Q) for every sample under the member's masks; forward passes only.

    ``start`` is the row number of ``x[0]`` in its split (see ``per_sample_grads``)."""
    model = model.to(device).eval()
    sizes = getattr(model, "mask_sizes", ())
    fs, qs = [], []
    for b0 in range(0, x.shape[0], batch_size):
        b1 = min(b0 + batch_size, x.shape[0])
        masks, _ = masks_for(mask, sizes, split, torch.arange(start + b0, start + b1), device)
        logits = model(x[b0:b1].to(device), masks=masks)
        yb = y[b0:b1].to(device)
        fs.append(output.f(logits, yb).cpu())
        qs.append(output.q(logits, yb).cpu())
    return torch.cat(fs), torch.cat(qs)


def samples_outputs(model: nn.Module, samples, mask: MaskSpec | None, split: str,
                    batch_size: int, device: str, output: ModelOutput
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """``forward_outputs`` over every row of ``samples`` (tensors or a Dataset)."""
    fs, qs = [], []
    for start, xb, yb in samples.chunks(batch_size):
        f, q = forward_outputs(model, xb, yb, mask, split, batch_size, device, output, start)
        fs.append(f)
        qs.append(q)
    return torch.cat(fs), torch.cat(qs)


def samples_grads(model: nn.Module, samples, mask: MaskSpec | None, split: str,
                  batch_size: int, device: str, output: ModelOutput, offset: int = 0
                  ) -> Iterator[tuple[slice, torch.Tensor]]:
    """``per_sample_grads`` over every row of ``samples``; rows are slices of ``samples``.

    ``offset`` is the split row number of ``samples``' row 0 (per-sample masks are keyed
    by ``offset + row``)."""
    for start, xb, yb in samples.chunks(batch_size):
        for rows, g in per_sample_grads(model, xb, yb, mask, split, batch_size, device,
                                        output, offset + start):
            yield slice(start + rows.start, start + rows.stop), g
