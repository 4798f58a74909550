"""TRAK per member and its eq. 2 aggregation.

For member e with projected train features Phi_e (n x k) and test features phi_e (m x k),
the member's block is B_e = phi_e (Phi_e^T Phi_e + ridge I)^-1 Phi_e^T (m x n). The
ensemble score is mean_e(Q_e)[None, :] * mean_e(B_e).

A member's train side, Phi_e and the Cholesky factor L_e of its kernel, is computed once
(``train_side``); any rows of test features are scored against it later
(``score_rows``), so new inputs never recompute it and no m x n block has to exist.
"""

from __future__ import annotations

import torch
from torch import nn

from raytda.core.args import ComputeArgs
from raytda.core.grads import n_trainable, samples_grads
from raytda.core.masks import MaskSpec
from raytda.core.outputs import CLASSIFICATION, ModelOutput
from raytda.core.projection import GaussianProjector
from raytda.core.sparse_input import SparseInputProjection
from raytda.data.samples import Samples

# Relative ridge (times the mean kernel eigenvalue) used only when the kernel is singular.
AUTO_RIDGE = 1e-5


def project_features(model: nn.Module, samples: Samples, projector: GaussianProjector,
                     mask: MaskSpec | None, split: str, args: ComputeArgs,
                     sparse: SparseInputProjection | None = None,
                     output: ModelOutput = CLASSIFICATION, offset: int = 0) -> torch.Tensor:
    """(n, k) projected per-sample gradients of the model output.

    ``sparse`` (from ``SparseInputProjection.build`` with the same projector) computes the
    same features while skipping the zero inputs' share of the product; it needs the
    samples as tensors. ``offset`` is the split row number of the samples' row 0
    (per-sample masks are keyed by it).
    """
    held = samples.tensors()
    if sparse is not None and held is not None:
        return sparse.features(model, *held, mask, split, args.grad_batch, args.device, output,
                               offset)
    out = torch.empty(samples.n, projector.k, dtype=torch.float32)
    for rows, g in samples_grads(model, samples, mask, split, args.grad_batch, args.device,
                                 output, offset):
        out[rows] = projector.project(g).float().cpu()
    return out


def train_side(train_feats: torch.Tensor, ridge: float | None = None
               ) -> tuple[torch.Tensor, float]:
    """Cholesky factor L (k x k, float64) of Phi^T Phi + ridge I, and the ridge used.

    ``ridge=None``: none if the kernel is positive definite, else AUTO_RIDGE times its mean
    eigenvalue (it is singular for certain when n < k).
    """
    phi_tr = train_feats.double()
    kern = phi_tr.T @ phi_tr
    k = kern.shape[0]
    eye = torch.eye(k, dtype=kern.dtype)
    if ridge is None:
        ridge = 0.0
        chol, info = torch.linalg.cholesky_ex(kern)
        if info.item() != 0 or train_feats.shape[0] < k:
            ridge = AUTO_RIDGE * float(torch.trace(kern)) / k
            chol = torch.linalg.cholesky(kern + ridge * eye)
    else:
        chol = torch.linalg.cholesky(kern + ridge * eye)
    return chol, float(ridge)


def score_rows(test_feats: torch.Tensor, train_feats: torch.Tensor, chol: torch.Tensor
               ) -> torch.Tensor:
    """phi (Phi^T Phi + ridge I)^-1 Phi^T for some test rows phi, in float64 (as float32)."""
    solved = torch.cholesky_solve(test_feats.double().T, chol)  # (k, rows)
    return (solved.T @ train_feats.double().T).float()


def kernel_solve(train_feats: torch.Tensor, test_feats: torch.Tensor,
                 ridge: float | None = None) -> tuple[torch.Tensor, float]:
    """phi (Phi^T Phi + ridge I)^-1 Phi^T in float64, and the ridge actually used."""
    chol, used = train_side(train_feats, ridge)
    return score_rows(test_feats, train_feats, chol), used


def sparse_for(model: nn.Module, projector: GaussianProjector, data,
               args: ComputeArgs) -> SparseInputProjection | None:
    """The zero-input fast path for this member, when it is on and applies."""
    held = data.train.tensors()
    if not args.sparse_inputs or held is None:
        return None
    return SparseInputProjection.build(model, projector, held[0], args.grad_batch)


def trak_features(model: nn.Module, data, projector: GaussianProjector, mask: MaskSpec | None,
                  ridge: float | None, args: ComputeArgs, output: ModelOutput = CLASSIFICATION
                  ) -> tuple[dict[str, torch.Tensor], dict]:
    """One member's train side and test features, and what was used to make them.

    Returns ``{"train_features": Phi (n, k), "chol": L (k, k), "test_features": phi (m, k)}``.
    ``projector`` has one row per trainable parameter (``n_trainable(model)``).
    """
    sparse = sparse_for(model, projector, data, args)
    feats_tr = project_features(model, data.train, projector, mask, "train", args, sparse, output)
    feats_te = project_features(model, data.test, projector, mask, "test", args, sparse, output)
    chol, used = train_side(feats_tr, ridge)
    return ({"train_features": feats_tr, "chol": chol, "test_features": feats_te},
            {"ridge": used, "proj_dim": projector.k, "n_params": n_trainable(model)})


# Gradients held at once by ``shared_gradient_features`` (more are projected in passes,
# each generating every projection again).
GRAD_CACHE_BYTES = 2 << 30


def shared_gradient_features(model: nn.Module, data, seeds: list[int], k: int,
                             ridge: float | None, args: ComputeArgs,
                             output: ModelOutput = CLASSIFICATION,
                             cache_bytes: int = GRAD_CACHE_BYTES
                             ) -> tuple[list[dict[str, torch.Tensor]], dict]:
    """One unmasked model's per-sample gradients computed once, projected with each seed.

    Returns, per seed, what ``trak_features`` returns for that seed's projector (the same
    features up to float32 rounding), and the time split: ``grad_s`` (the one gradient
    pass), ``project_s`` and ``solve_s`` (one entry per seed; projecting includes
    generating that seed's P). Gradients are held up to ``cache_bytes`` (in the zero-input
    layout when it applies, else dense) and each full cache is projected seed by seed, so
    one projection matrix is held at a time.
    """
    import time

    width = n_trainable(model)

    def projector(seed: int) -> GaussianProjector:  # as TRAK's member() builds it
        return GaussianProjector(width, k, seed, args.proj_memory_bytes, args.device,
                                 cpu_gemm=args.cpu_gemm)

    splits = {"train": data.train, "test": data.test}
    tensors = {s: v.tensors() for s, v in splits.items()}
    layout = None  # the zero-input layout, shared by every seed's projector
    if args.sparse_inputs and all(t is not None for t in tensors.values()):
        layout = SparseInputProjection.build(model, projector(seeds[0]), tensors["train"][0],
                                             args.grad_batch, materialize=False)
    feats = [{s: torch.empty(v.n, k, dtype=torch.float32) for s, v in splits.items()}
             for _ in seeds]
    info: dict = {"grad_s": 0.0, "project_s": [0.0] * len(seeds), "solve_s": [0.0] * len(seeds),
                  "passes": 0, "sparse_inputs": layout is not None}
    held: list[tuple[str, object, torch.Tensor]] = []
    held_bytes = 0

    def flush() -> None:
        nonlocal held_bytes
        for d, seed in enumerate(seeds):
            t0 = time.perf_counter()
            proj = projector(seed)
            fn = proj.project if layout is None else layout.for_projector(proj).project
            for split, rows, g in held:
                feats[d][split][rows] = fn(g).float().cpu()
            del proj, fn  # one seed's P at a time
            info["project_s"][d] += time.perf_counter() - t0
        held.clear()
        held_bytes = 0
        info["passes"] += 1

    for split, samples in splits.items():
        if layout is not None:
            it = layout.batches(model, *tensors[split], None, split, args.grad_batch,
                                args.device, output)
        else:
            it = samples_grads(model, samples, None, split, args.grad_batch, args.device, output)
        while True:
            t0 = time.perf_counter()
            item = next(it, None)
            info["grad_s"] += time.perf_counter() - t0
            if item is None:
                break
            rows, g = item
            held.append((split, rows, g))
            held_bytes += g.numel() * g.element_size()
            if held_bytes >= cache_bytes:
                flush()
    if held:
        flush()
    out, ridges = [], []
    for d in range(len(seeds)):
        t0 = time.perf_counter()
        chol, used = train_side(feats[d]["train"], ridge)
        info["solve_s"][d] = time.perf_counter() - t0
        out.append({"train_features": feats[d]["train"], "chol": chol,
                    "test_features": feats[d]["test"]})
        ridges.append(used)
    info.update({"ridge": ridges, "proj_dim": k, "n_params": width})
    return out, info


def trak_block(model: nn.Module, data, projector: GaussianProjector, mask: MaskSpec | None,
               ridge: float | None, args: ComputeArgs,
               output: ModelOutput = CLASSIFICATION) -> tuple[torch.Tensor, dict]:
    """One member's (m x n) TRAK block and what was used to make it."""
    side, info = trak_features(model, data, projector, mask, ridge, args, output)
    return score_rows(side["test_features"], side["train_features"], side["chol"]), info


def trak_scores(q_values: list[torch.Tensor], blocks: list[torch.Tensor]) -> torch.Tensor:
    """Eq. 2: (mean of Q over Q-members) times (mean of blocks over feature members)."""
    q = torch.stack(q_values).mean(0)
    return torch.stack(blocks).mean(0) * q.unsqueeze(0)
