"""The Table-1-style sweep benchmark: raytda's shared work against a plain dattri loop."""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from raytda.core.args import ComputeArgs
from raytda.core.grads import forward_outputs, n_params
from raytda.core.masks import MaskSpec, fixed_masks
from raytda.core.projection import GaussianProjector
from raytda.core.train import half_subset, load_weights, train_model
from raytda.core.trak import trak_scores
from raytda.data import Dataset
from raytda.methods.trak import trak_block
from raytda.specs import derive_seed
from raytda.tasks import get_task
from raytda.tasks.mlp import MNISTMLPTask

from common import log, mean_row_corr, table
from dattri_side import FixedMaskMLP, dattri_available, serve_dattri


@dataclass(frozen=True)
class Config:
    kind: str  # "naive" or "dropout"
    I: int
    D: int = 1

    @property
    def label(self) -> str:
        return f"{self.kind} I={self.I}" + (f" D={self.D}" if self.kind == "dropout" else "")

    def members(self) -> list[tuple[int, int | None]]:
        """(model index, mask index or None) of every member."""
        if self.kind == "naive":
            return [(i, None) for i in range(self.I)]
        return [(i, d) for i in range(self.I) for d in range(self.D)]


def table1_configs(max_i: int, d: int) -> list[Config]:
    return ([Config("naive", i) for i in range(1, max_i + 1)]
            + [Config("dropout", i, d) for i in range(1, max_i + 1)])


def member_mask(task: MNISTMLPTask, i: int, d: int | None) -> MaskSpec | None:
    if d is None:
        return None
    return MaskSpec(seed=derive_seed("bench-mask", i, d), rate=task.settings["dropout"])


def member_proj_seed(i: int, d: int | None) -> int:
    return derive_seed("bench-proj", i, -1 if d is None else d)


def train_member_model(task: MNISTMLPTask, data: Dataset, i: int) -> tuple[dict, float]:
    """Model i of the ensemble: TRAK's recipe, a random half of the train set, seed i."""
    sub = torch.from_numpy(half_subset(data.n_train, derive_seed("bench-subset", i)))
    trained = train_model(task.build_model, task.recipe, data.x_train[sub], data.y_train[sub],
                          seed=derive_seed("bench-train", i))
    return trained.final, trained.train_time_s


def raytda_sweep(task: MNISTMLPTask, data: Dataset, configs: list[Config], k: int,
                      compute: ComputeArgs) -> dict:
    """The sweep with raytda's work sharing, written against the compute core.

    Trains each of the max-I models once, computes each member's TRAK block and Q once,
    and builds every configuration's scores from the shared members (naive I=3 reuses
    I=1 and I=2's members; Dropout members of model i reuse its one training run).

    These are the compute-core calls the sweep's jobs make. The public ``Sweep`` shares the
    same work through its artifact store, but it always trains the LDS models as well, which
    the dattri loop does not; timing it would compare different work.
    """
    t0 = time.perf_counter()
    max_i = max(c.I for c in configs)
    states, train_s = {}, 0.0
    for i in range(max_i):
        states[i], t = train_member_model(task, data, i)
        train_s += t
        log(f"raytda sweep: trained model {i} in {t:.1f} s")
    blocks: dict[tuple[int, int | None], torch.Tensor] = {}
    qs: dict[tuple[int, int | None], torch.Tensor] = {}
    t_serve = time.perf_counter()
    for c in configs:
        for member in c.members():
            if member in blocks:
                continue
            i, d = member
            model = load_weights(task.build_model(), states[i], data.x_train[:1])
            mask = member_mask(task, i, d)
            proj = GaussianProjector(n_params(model), k, member_proj_seed(i, d),
                                     compute.proj_memory_bytes, compute.device,
                                     cpu_gemm=compute.cpu_gemm)
            blocks[member], _ = trak_block(model, data, proj, mask, None, compute)
            qs[member] = forward_outputs(model, data.x_train, data.y_train, mask, "train",
                                         compute.forward_batch, compute.device)[1]
        log(f"raytda sweep: {c.label} ready ({len(blocks)} member blocks so far)")
    serve_s = time.perf_counter() - t_serve
    scores = {c.label: trak_scores([qs[m] for m in c.members()], [blocks[m] for m in c.members()])
              for c in configs}
    return {"wall_s": time.perf_counter() - t0, "train_s": train_s, "serve_s": serve_s,
            "trainings": max_i, "member_blocks": len(blocks), "scores": scores}


def dattri_sweep_loop(task: MNISTMLPTask, data: Dataset, configs: list[Config], k: int,
                      batch: int) -> dict:
    """The same sweep as a plain loop over dattri: every configuration from scratch.

    Each configuration trains its own I models (same trainer and seeds as raytda's, so the
    same weights) and runs one TRAKAttributor over its I (naive) or I*D (dropout) members;
    fixed dropout masks ride along in the checkpoints as buffers (``FixedMaskMLP``).
    """
    t0 = time.perf_counter()
    train_s = serve_s = 0.0
    trainings = servings = 0
    scores = {}
    for c in configs:
        states = {}
        for i in range(c.I):
            states[i], t = train_member_model(task, data, i)
            train_s += t
            trainings += 1
        t1 = time.perf_counter()
        if c.kind == "naive":
            model: nn.Module = task.build_model()
            ckpts = [states[i] for i, _ in c.members()]
        else:
            model = FixedMaskMLP(task.build_model(), data.x_train[:1])
            ckpts = []
            for i, d in c.members():
                spec = member_mask(task, i, d)
                masks = fixed_masks(spec, model.net.mask_sizes)
                ck = {f"net.module.{key}": v for key, v in states[i].items()}
                ck.update({f"mask{s}": m for s, m in enumerate(masks)})
                ckpts.append(ck)
        scores[c.label], _ = serve_dattri(model, ckpts, data, k, batch)
        serve_s += time.perf_counter() - t1
        servings += len(ckpts)
        log(f"dattri loop: {c.label} done, {time.perf_counter() - t0:.0f} s so far")
    return {"wall_s": time.perf_counter() - t0, "train_s": train_s, "serve_s": serve_s,
            "trainings": trainings, "member_blocks": servings, "scores": scores}


def dattri_member_time(args: argparse.Namespace, serving: dict | None, task: MNISTMLPTask,
                       data: Dataset) -> tuple[int, float]:
    """dattri's fastest batch size and its single-member serving time.

    Taken from the serving section when it ran; otherwise one member is served now at each
    of ``--dattri-batches``.
    """
    if serving and serving.get("dattri"):
        best = min(serving["dattri"], key=lambda b: min(serving["dattri"][b]))
        return best, min(serving["dattri"][best])
    state, _ = train_member_model(task, data, 0)
    by_batch = {b: serve_dattri(task.build_model(), [state], data, args.proj_dim, b)[1]
                for b in args.dattri_batches}
    log(f"dattri single member: {by_batch} s by batch size")
    best = min(by_batch, key=by_batch.get)
    return best, by_batch[best]


def run_sweep(args: argparse.Namespace, task: MNISTMLPTask, data: Dataset,
              serving: dict | None) -> None:
    configs = table1_configs(args.sweep_max_i, args.sweep_d)
    sweep_task = get_task("mnist-mlp", data_dir=args.data_dir, n_train=args.n_train,
                          n_test=args.n_test, epochs=args.sweep_epochs)
    compute = ComputeArgs(grad_batch=args.grad_batch, cpu_gemm=args.cpu_gemm,
                          sparse_inputs=args.sparse_inputs)
    log(f"sweep: {', '.join(c.label for c in configs)}")
    r = raytda_sweep(sweep_task, data, configs, args.proj_dim, compute)
    n_train_loop = sum(c.I for c in configs)
    n_serve_loop = sum(len(c.members()) for c in configs)
    rows = [["raytda (shared work)", r["trainings"], r["member_blocks"], f"{r['train_s']:.0f}",
             f"{r['serve_s']:.0f}", f"{r['wall_s']:.0f}", "1.00", "measured"]]
    if dattri_available() and not args.skip_dattri:
        d_batch, per_member = dattri_member_time(args, serving, sweep_task, data)
        # The estimate uses this run's own measurements: raytda's time per training (same
        # trainer, same seeds) and dattri's best single-member serving time.
        per_train = r["train_s"] / r["trainings"]
        est_train, est_serve = n_train_loop * per_train, n_serve_loop * per_member
        rows.append([f"dattri loop (batch {d_batch})", n_train_loop, n_serve_loop,
                     f"{est_train:.0f}", f"{est_serve:.0f}", f"{est_train + est_serve:.0f}",
                     f"{(est_train + est_serve) / r['wall_s']:.2f}",
                     "estimated from one member" + ("" if args.with_dattri_sweep
                                                    else " (--with-dattri-sweep to measure)")])
        if args.with_dattri_sweep:
            d = dattri_sweep_loop(sweep_task, data, configs, args.proj_dim, d_batch)
            agree = statistics.mean(mean_row_corr(r["scores"][c.label], d["scores"][c.label])
                                    for c in configs)
            rows.append([f"dattri loop (batch {d_batch})", d["trainings"], d["member_blocks"],
                         f"{d['train_s']:.0f}", f"{d['serve_s']:.0f}", f"{d['wall_s']:.0f}",
                         f"{d['wall_s'] / r['wall_s']:.2f}", f"measured (score r={agree:.3f})"])
    print(f"\n## Table-1-style sweep, TRAK k={args.proj_dim}: naive I=1..{args.sweep_max_i} and "
          f"Dropout I=1..{args.sweep_max_i} x D={args.sweep_d} ({len(configs)} configurations; "
          f"models trained {args.sweep_epochs} epochs on random halves; LDS not included)\n")
    print(table(["implementation", "trainings", "member servings", "train s", "serve s",
                 "wall s", "time / raytda", "how"], rows))
