"""Influence functions: g(train)^T (C + damping I)^-1 g(test), C^-1 g by conjugate gradients.

C, the curvature, is of the member's mean training loss (the Task's loss, cross-entropy by
default, its masks applied) over the rows its model was trained on, with respect to its
trainable parameters. Two curvatures, both reached only through matrix-vector products:

- ``"ggn"`` (default): the generalized Gauss-Newton matrix J^T H_z J, J the Jacobian of
  the logits z and H_z the Hessian of the loss with respect to z (for softmax
  cross-entropy diag(p) - p p^T per prediction: the Fisher). Positive semi-definite
  whenever the loss is convex in z, so CG on it converges on any network. J v is a jvp of
  the logits, H_z (J v) a jvp of the loss's gradient with respect to z alone (exact for any
  loss, and cheap: no pass through the network), J^T a vjp.
- ``"hessian"``: the exact Hessian (jvp of grad). A trained network's Hessian is
  indefinite; CG then stops a column at non-positive curvature (``conjugate_gradients``).

CG solves all test right-hand sides at once, each column with its own step sizes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, jvp, vjp, vmap

from raytda.core.args import ComputeArgs
from raytda.core.grads import samples_grads, trainable_params
from raytda.core.masks import MaskSpec, masks_for
from raytda.core.outputs import CLASSIFICATION, LossFn, ModelOutput, mean_cross_entropy
from raytda.data.samples import Samples

CURVATURES = ("ggn", "hessian")
MatVec = Callable[[torch.Tensor], torch.Tensor]
# (samples, mask, split) -> (rows, per-sample gradients) batches
GradientBatches = Callable[..., Iterator[tuple[slice | torch.Tensor, torch.Tensor]]]


def _flat_batches(model: nn.Module, samples: Samples, mask: MaskSpec | None,
                  rows: np.ndarray | None, batch: int):
    """(theta, logits(flat, x, masks), [(x, y, masks)]): the model as a function of its
    flat trainable parameters, and the batches of ``samples`` on the parameters' device.

    ``rows`` numbers the samples as train rows (per-sample masks are keyed by that number,
    as for the train gradients); None: they are rows 0..n-1."""
    params = trainable_params(model)
    names = list(params)
    shapes = [params[k].shape for k in names]
    sizes = [params[k].numel() for k in names]
    theta = torch.cat([params[k].reshape(-1) for k in names])
    device = theta.device  # data and masks must sit with the parameters
    mask_sizes = getattr(model, "mask_sizes", ())
    batches = []
    for start, xb, yb in samples.chunks(batch):
        idx = torch.arange(start, start + xb.shape[0])
        if rows is not None:
            idx = torch.as_tensor(np.asarray(rows)[idx.numpy()], dtype=torch.long)
        masks, _ = masks_for(mask, mask_sizes, "train", idx, device)
        batches.append((xb.to(device), yb.to(device), masks))

    def logits(flat: torch.Tensor, xb: torch.Tensor, masks) -> torch.Tensor:
        p = {k: t.view(sh) for k, t, sh in zip(names, flat.split(sizes), shapes, strict=True)}
        return functional_call(model, p, (xb,), {"masks": masks})

    return theta, logits, batches


def make_hvp(model: nn.Module, samples: Samples, mask: MaskSpec | None,
             batch: int = 1024, rhs_chunk: int = 64, loss_fn: LossFn = mean_cross_entropy,
             rows: np.ndarray | None = None) -> MatVec:
    """A function V (p, r) -> H V, H the Hessian of the mean training loss over ``samples``.

    ``loss_fn(logits, y)`` is a batch's mean loss; batches are weighted by their size.
    ``rows``: the samples' train-row numbers, for per-sample masks (default 0..n-1).
    """
    theta, logits, batches = _flat_batches(model, samples, mask, rows, batch)

    def loss(flat, xb, yb, masks):
        return loss_fn(logits(flat, xb, masks), yb) * xb.shape[0]

    def hvp(vecs: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(vecs)
        for c in range(0, vecs.shape[1], rhs_chunk):
            v = vecs[:, c:c + rhs_chunk]
            for xb, yb, masks in batches:
                def one(u, xb=xb, yb=yb, masks=masks):
                    return jvp(lambda t: grad(loss)(t, xb, yb, masks), (theta,), (u,))[1]
                out[:, c:c + rhs_chunk] += vmap(one, in_dims=1, out_dims=1)(v)
        return out / samples.n

    return hvp


def make_gnvp(model: nn.Module, samples: Samples, mask: MaskSpec | None,
              batch: int = 1024, rhs_chunk: int = 64, loss_fn: LossFn = mean_cross_entropy,
              rows: np.ndarray | None = None) -> MatVec:
    """A function V (p, r) -> G V, G = J^T H_z J the Gauss-Newton matrix of the mean
    training loss over ``samples`` (arguments as for ``make_hvp``).

    Works for any logits shape: (B, C) for classification, (B, T, V) for sequences.
    """
    theta, logits, batches = _flat_batches(model, samples, mask, rows, batch)

    def gnvp(vecs: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(vecs)
        for xb, yb, masks in batches:
            def f(t, xb=xb, masks=masks):
                return logits(t, xb, masks)

            def loss_of_z(z, yb=yb, n=xb.shape[0]):
                return loss_fn(z, yb) * n

            z, pull_back = vjp(f, theta)  # one forward pass serves every column's J^T
            z = z.detach()

            def jv(u, f=f):
                return jvp(f, (theta,), (u,))[1]

            def hz(t, z=z, loss_of_z=loss_of_z):
                return jvp(grad(loss_of_z), (z,), (t,))[1]

            for c in range(0, vecs.shape[1], rhs_chunk):
                v = vecs[:, c:c + rhs_chunk]
                hjv = vmap(hz)(vmap(jv, in_dims=1)(v))
                out[:, c:c + rhs_chunk] += vmap(pull_back)(hjv)[0].T
        return out / samples.n

    return gnvp


def conjugate_gradients(matvec: MatVec, b: torch.Tensor, damping: float, max_iter: int,
                        tol: float) -> tuple[torch.Tensor, dict]:
    """Solve (A + damping I) X = B column by column (A symmetric), all columns at once.

    A trained network's loss Hessian is indefinite, and along a direction of non-positive
    curvature p^T (A + damping I) p <= 0 the quadratic CG minimizes has no minimum, so
    further steps move away from any useful solution (on MNIST-MLP members the residual
    grew to thousands of times |b|). A column that meets one stops there and keeps its
    last iterate (truncated Newton-CG, Nocedal & Wright, Algorithm 7.1); one that meets it
    on its first step keeps B's column itself, the steepest-descent direction. How many
    columns stopped so is reported, and ``cg_converged`` says whether every column reached
    the tolerance without meeting one.
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
    negative = int(stopped.sum())
    return x, {"cg_iterations": it, "cg_max_rel_residual": rel,
               "cg_negative_curvature_columns": negative,
               "cg_converged": rel <= tol and negative == 0}


def curvature_rows(n_train: int, train_rows: np.ndarray | None, cap: int | None) -> np.ndarray:
    """The train rows the curvature is taken over: the member's training rows (all rows
    when None), at most ``cap`` of them drawn with a fixed seed."""
    rows = np.arange(n_train) if train_rows is None else np.asarray(train_rows, dtype=np.int64)
    if cap is not None and cap < len(rows):
        rng = np.random.default_rng(0)
        rows = rows[np.sort(rng.choice(len(rows), cap, replace=False))]
    return rows


def influence_block(model: nn.Module, data, mask: MaskSpec | None, damping: float,
                    max_iter: int, tol: float, hessian_samples: int | None, args: ComputeArgs,
                    loss_fn: LossFn = mean_cross_entropy, curvature: str = "ggn",
                    train_rows: np.ndarray | None = None,
                    gradients: GradientBatches | None = None, output: ModelOutput = CLASSIFICATION
                    ) -> tuple[torch.Tensor, dict]:
    """(m x n) IF scores for one member, plus the damping and CG diagnostics.

    ``gradients(samples, mask, split)`` yields (rows, per-sample gradients of the model
    output f) in parameter order (a featurizer's exact ``batches``; default: those of
    :func:`~raytda.core.grads.samples_grads` for ``output``). The curvature (``"ggn"`` or
    ``"hessian"``) is of ``loss_fn`` (the training loss) over ``train_rows``, the rows the
    member was trained on (None: the whole train split), at most ``hessian_samples`` of
    them.
    """
    if gradients is None:
        def gradients(samples, mask, split):
            return samples_grads(model, samples, mask, split, args.grad_batch, args.device,
                                 output)
    if curvature not in CURVATURES:
        raise ValueError(f"unknown curvature {curvature!r}; choose one of {list(CURVATURES)}")
    rows = curvature_rows(data.n_train, train_rows, hessian_samples)
    model = model.to(args.device)  # before the products, which capture the parameters
    make = make_gnvp if curvature == "ggn" else make_hvp
    if len(rows) == data.n_train:  # rows are 0..n-1: no copy of the train split
        matvec = make(model, data.train, mask, loss_fn=loss_fn)
    else:
        matvec = make(model, data.train.subset(rows), mask, loss_fn=loss_fn, rows=rows)
    device = next(iter(trainable_params(model).values())).device
    parts = [(at, g.to(device)) for at, g in gradients(data.test, mask, "test")]
    test = torch.empty(data.n_test, parts[0][1].shape[1], device=device, dtype=parts[0][1].dtype)
    for at, g in parts:
        test[at] = g
    del parts
    solved, info = conjugate_gradients(matvec, test.T.contiguous(), damping, max_iter, tol)
    out = torch.empty(data.n_test, data.n_train)
    for idx, g in gradients(data.train, mask, "train"):
        out[:, idx] = (solved.T @ g.to(device).T).cpu()
    return out, {"damping": damping, "curvature": curvature,
                 "curvature_rows": len(rows), **info}
