"""Model output, Q and per-sample gradients for generative (language-model) settings.

A sample is a token sequence ``x`` (T,) with next-token targets ``y`` (T,).

Model output f (DESIGN section 2): the log-likelihood of the sample,
``f = sum_t log p(y_t | x_<=t)``. It is the generative counterpart of the classification
margin, and LDS ground truth records it on test samples.

Q (TRAK's per-train-sample weight, eq. 2): ``Q = 1 - exp(mean_t log p(y_t | x_<=t))``, one
minus the geometric-mean token probability. Why this and not the alternatives:

- TRAK's Q is the loss's derivative with respect to the output, ``1 - p_y`` for the margin.
  Taken literally with f = log-likelihood the training loss is exactly -f, so Q would be
  the constant 1: no reweighting at all.
- ``1 - p(sequence)`` is the literal "one minus the probability of the target" but p of a
  whole sequence is ``exp(-T * cross-entropy)``, about 1e-40 for 64 characters at 1.4 nats,
  so Q is 1 to machine precision for every sample: again no information.
- The per-token geometric mean keeps the classification meaning (how far the model is from
  fitting the sample, in [0, 1), down-weighting samples it already fits) on the scale of a
  single prediction, independent of length. It is the convention of dattri's language-model
  TRAK (probability = exp(-mean token loss)), which the paper's authors use.

Gradients are taken with respect to the model's *trainable* parameters (``requires_grad``):
every parameter of a plain model, only the adapter (LoRA A/B and the adapted layers'
biases) of a LoRA member. That is what makes LoRA members cheap to serve: the feature
dimension is the adapter's size, not the model's.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from raytda.core.args import ComputeArgs
from raytda.core.masks import MaskSpec, masks_for


def token_logprobs(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log p(y_t | x_<=t) for every position: logits (..., T, V), y (..., T) -> (..., T)."""
    return torch.log_softmax(logits, dim=-1).gather(-1, y.unsqueeze(-1)).squeeze(-1)


def sequence_loglik(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The generative model output f: sum of token log-probs, (..., T, V) -> (...)."""
    return token_logprobs(logits, y).sum(-1)


def one_minus_mean_p(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Q = 1 - exp(mean token log-prob), as -expm1 so it stays accurate when the fit is poor
    or near perfect."""
    return -torch.expm1(token_logprobs(logits, y).mean(-1))


def trainable_params(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters gradients are taken with respect to (detached), in module order."""
    return {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}


def n_trainable(model: nn.Module) -> int:
    """Dimension of a member's gradient features."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _output_fn(model: nn.Module):
    # Only the trainable parameters are passed; functional_call takes the frozen ones (the
    # base model under an adapter) from the module itself.
    def f(params, x, y, masks):
        batch_masks = None if masks is None else tuple(m.unsqueeze(0) for m in masks)
        logits = functional_call(model, params, (x.unsqueeze(0),), {"masks": batch_masks})
        return sequence_loglik(logits, y.unsqueeze(0))[0]
    return f


def lm_per_sample_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                        mask: MaskSpec | None = None, split: str = "train",
                        batch_size: int = 256, device: str = "cpu"
                        ) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield (rows, G) with G[b] = flattened d f(x_b) / d trainable params (module order).

    Same contract as :func:`raytda.core.grads.per_sample_grads`, for f = log-likelihood.
    """
    model = model.to(device).eval()
    params = trainable_params(model)
    if not params:
        raise ValueError("the model has no trainable parameters to take gradients of")
    f = _output_fn(model)
    sizes = getattr(model, "mask_sizes", ())
    n = x.shape[0]
    for start in range(0, n, batch_size):
        rows = slice(start, min(start + batch_size, n))
        xb, yb = x[rows].to(device), y[rows].to(device)
        masks, batched = masks_for(mask, sizes, split, torch.arange(rows.start, rows.stop), device)
        g = vmap(grad(f), in_dims=(None, 0, 0, 0 if batched else None))(params, xb, yb, masks)
        yield rows, torch.cat([t.reshape(t.shape[0], -1) for t in g.values()], dim=1)


@torch.no_grad()
def lm_forward_outputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                       mask: MaskSpec | None = None, split: str = "train",
                       batch_size: int = 1024, device: str = "cpu"
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-likelihoods f, Q) of every sample under the member's masks; forward only."""
    model = model.to(device).eval()
    sizes = getattr(model, "mask_sizes", ())
    fs, qs = [], []
    for start in range(0, x.shape[0], batch_size):
        stop = min(start + batch_size, x.shape[0])
        masks, _ = masks_for(mask, sizes, split, torch.arange(start, stop), device)
        logits = model(x[start:stop].to(device), masks=masks)
        yb = y[start:stop].to(device)
        fs.append(sequence_loglik(logits, yb).cpu())
        qs.append(one_minus_mean_p(logits, yb).cpu())
    return torch.cat(fs), torch.cat(qs)


# --------------------------------------------------------------------------- methods
# The generative twins of trak.trak_block and gradsim.gradsim_block: the same math, fed by
# lm_per_sample_grads.


def lm_project_features(model: nn.Module, x: torch.Tensor, y: torch.Tensor, projector,
                        mask: MaskSpec | None, split: str, args: ComputeArgs) -> torch.Tensor:
    """(n, k) projected per-sample gradients of the log-likelihood."""
    out = torch.empty(x.shape[0], projector.k, dtype=torch.float32)
    for rows, g in lm_per_sample_grads(model, x, y, mask, split, args.grad_batch, args.device):
        out[rows] = projector.project(g).float().cpu()
    return out


def lm_trak_block(model: nn.Module, data, projector, mask: MaskSpec | None,
                  ridge: float | None, args: ComputeArgs) -> tuple[torch.Tensor, dict]:
    """One member's (m x n) TRAK block; ``projector`` must have n_trainable(model) rows."""
    from raytda.core.trak import kernel_solve

    feats_tr = lm_project_features(model, data.x_train, data.y_train, projector, mask,
                                   "train", args)
    feats_te = lm_project_features(model, data.x_test, data.y_test, projector, mask,
                                   "test", args)
    block, used = kernel_solve(feats_tr, feats_te, ridge)
    return block, {"ridge": used, "proj_dim": projector.k, "n_params": n_trainable(model)}


def _unit(g: torch.Tensor) -> torch.Tensor:
    return g / g.norm(dim=1, keepdim=True).clamp_min(torch.finfo(g.dtype).tiny)


def lm_gradsim_block(model: nn.Module, data, mask: MaskSpec | None, normalize: bool,
                     args: ComputeArgs) -> torch.Tensor:
    """(m x n) Grad-Dot (or Grad-Cos with ``normalize``) of log-likelihood gradients."""
    test = torch.cat([g for _, g in lm_per_sample_grads(model, data.x_test, data.y_test, mask,
                                                        "test", args.grad_batch, args.device)])
    if normalize:
        test = _unit(test)
    out = torch.empty(data.n_test, data.n_train)
    for rows, g in lm_per_sample_grads(model, data.x_train, data.y_train, mask, "train",
                                       args.grad_batch, args.device):
        out[:, rows] = (test @ (_unit(g) if normalize else g).T).cpu()
    return out
