"""Influence functions: g(train)^T (H + damping I)^-1 g(test), H^-1 g by conjugate gradients.

H is the Hessian of the member's mean training loss (the Task's loss, cross-entropy by
default, its masks applied) with respect to its trainable parameters, reached only through
Hessian-vector products (torch.func jvp of grad); CG solves all test right-hand sides at
once, each column with its own step sizes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, jvp, vmap

from raytda.core.args import ComputeArgs
from raytda.core.grads import samples_grads, trainable_params
from raytda.core.masks import MaskSpec, masks_for
from raytda.core.outputs import CLASSIFICATION, LossFn, ModelOutput, mean_cross_entropy
from raytda.data.samples import Samples


def make_hvp(model: nn.Module, samples: Samples, mask: MaskSpec | None,
             batch: int = 1024, rhs_chunk: int = 64, loss_fn: LossFn = mean_cross_entropy):
    """A function V (p, r) -> H V for the mean training loss over ``samples``.

    ``loss_fn(logits, y)`` is a batch's mean loss; batches are weighted by their size.
    """
    params = trainable_params(model)
    names = list(params)
    shapes = [params[k].shape for k in names]
    sizes = [params[k].numel() for k in names]
    theta = torch.cat([params[k].reshape(-1) for k in names])
    device = theta.device  # data and masks must sit with the parameters
    mask_sizes = getattr(model, "mask_sizes", ())
    n = samples.n
    batches = []
    for start, xb, yb in samples.chunks(batch):
        idx = torch.arange(start, start + xb.shape[0])
        masks, _ = masks_for(mask, mask_sizes, "train", idx, device)
        batches.append((xb.to(device), yb.to(device), masks))

    def unflatten(flat: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: t.view(sh) for k, t, sh in zip(names, flat.split(sizes), shapes,
                                                      strict=True)}

    def loss(flat, xb, yb, masks):
        logits = functional_call(model, unflatten(flat), (xb,), {"masks": masks})
        return loss_fn(logits, yb) * xb.shape[0]

    def hvp(vecs: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(vecs)
        for c in range(0, vecs.shape[1], rhs_chunk):
            v = vecs[:, c:c + rhs_chunk]
            for xb, yb, masks in batches:
                def one(u, xb=xb, yb=yb, masks=masks):
                    return jvp(lambda t: grad(loss)(t, xb, yb, masks), (theta,), (u,))[1]
                out[:, c:c + rhs_chunk] += vmap(one, in_dims=1, out_dims=1)(v)
        return out / n

    return hvp


def conjugate_gradients(matvec, b: torch.Tensor, damping: float, max_iter: int, tol: float
                        ) -> tuple[torch.Tensor, dict]:
    """Solve (A + damping I) X = B column by column (A symmetric), all columns at once.

    A trained network's loss Hessian is indefinite, and along a direction of non-positive
    curvature p^T (A + damping I) p <= 0 the quadratic CG minimizes has no minimum, so
    further steps move away from any useful solution (on MNIST-MLP members the residual
    grew to thousands of times |b|). A column that meets one stops there and keeps its
    last iterate (truncated Newton-CG, Nocedal & Wright, Algorithm 7.1); one that meets it
    on its first step keeps B's column itself, the steepest-descent direction. How many
    columns stopped so is reported.
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = (r * r).sum(0)
    bnorm = b.norm(dim=0).clamp_min(1e-30)
    stopped = torch.zeros_like(rs, dtype=torch.bool)  # met non-positive curvature
    it = 0
    for it in range(1, max_iter + 1):
        active = (rs.sqrt() > tol * bnorm) & ~stopped
        if not bool(active.any()):
            it -= 1
            break
        ap = matvec(p) + damping * p
        curv = (p * ap).sum(0)
        bad = active & (curv <= 0)
        if it == 1 and bool(bad.any()):  # p = b here, so the residual of x = b is b - ap
            x[:, bad] = b[:, bad]
            r[:, bad] = b[:, bad] - ap[:, bad]
            rs = torch.where(bad, (r * r).sum(0), rs)
        stopped |= bad
        active &= ~bad
        alpha = torch.where(active, rs / torch.where(active, curv, 1.0), torch.zeros_like(rs))
        x += alpha * p
        r -= alpha * ap
        rs_new = (r * r).sum(0)
        beta = torch.where(active, rs_new / rs.clamp_min(1e-300), torch.zeros_like(rs))
        p = r + beta * p
        rs = torch.where(active, rs_new, rs)
    rel = float((rs.sqrt() / bnorm).max())
    return x, {"cg_iterations": it, "cg_max_rel_residual": rel,
               "cg_negative_curvature_columns": int(stopped.sum())}


def influence_block(model: nn.Module, data, mask: MaskSpec | None, damping: float,
                    max_iter: int, tol: float, hessian_samples: int | None, args: ComputeArgs,
                    output: ModelOutput = CLASSIFICATION, loss_fn: LossFn = mean_cross_entropy
                    ) -> tuple[torch.Tensor, dict]:
    """(m x n) IF scores for one member, plus the damping and CG diagnostics.

    Gradients are of the model output f; H is of ``loss_fn`` (the training loss).
    ``hessian_samples`` rows drawn with a fixed seed stand in for the whole train split.
    """
    hess = data.train
    if hessian_samples is not None and hessian_samples < data.n_train:
        rng = np.random.default_rng(0)
        hess = hess.subset(np.sort(rng.choice(data.n_train, hessian_samples, replace=False)))
    model = model.to(args.device)  # before make_hvp, which captures the parameters
    hvp = make_hvp(model, hess, mask, loss_fn=loss_fn)
    test = torch.cat([g for _, g in samples_grads(model, data.test, mask, "test",
                                                  args.grad_batch, args.device, output)])
    solved, info = conjugate_gradients(hvp, test.T.contiguous(), damping,
                                       max_iter, tol)
    out = torch.empty(data.n_test, data.n_train)
    for rows, g in samples_grads(model, data.train, mask, "train", args.grad_batch,
                                 args.device, output):
        out[:, rows] = (solved.T @ g.T).cpu()
    return out, {"damping": damping, **info}
