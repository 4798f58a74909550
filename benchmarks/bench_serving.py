"""TRAK serving benchmark: raytda against dattri 0.3.0 on the same MNIST-MLP checkpoint.

    python benchmarks/bench_serving.py --data-dir /work/shared/data/mnist
    python benchmarks/bench_serving.py --data-dir ... --sweep                       # + sweep
    python benchmarks/bench_serving.py --data-dir ... --sweep --with-dattri-sweep   # + dattri loop

Inputs are the built-in mnist-mlp task's: MNIST normalized as dattri's benchmark does (mean
0.1307, std 0.3081), so both sides see the same normalized tensors and raytda's zero-input
path skips the background value -0.4242 instead of 0 (``raytda/core/sparse_input.py``).

Serving = everything after training: per-sample gradients of the margin on train and test,
their k=2048 Gaussian projection (including generating the projection matrix), the kernel
solve, Q = 1 - p on the train set, and the scores (I = 1). Both sides use the same trained
checkpoint, the same 5000 train / 500 test samples, the same model output (the margin, for
train and test gradients), Q = 1 - p_y, k = 2048 Gaussian projections, no ridge, CPU.
They differ only in projection seeds (so scores agree closely but not exactly; the
agreement is printed) and in raytda solving in float64.

The checkpoint is trained for ``--epochs`` (default 10, not the recipe's 100): only serving
is timed and its cost does not depend on how long the model was trained.

The fp32 matmul rate of this machine is measured in the same run (a square 4096 SGEMM and a
GEMM of the projection's own shape), so the projection's achieved GFLOP/s can be read
against it even when other work shares the CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from raytda.core import gemm
from raytda.core.args import ComputeArgs
from raytda.core.grads import forward_outputs, n_params, per_sample_grads
from raytda.core.projection import GaussianProjector
from raytda.core.sparse_input import SparseInputProjection
from raytda.core.train import load_weights, train_model
from raytda.core.trak import kernel_solve, trak_scores
from raytda.data import Dataset
from raytda.methods.trak import trak_block
from raytda.tasks.mlp import MNISTMLPTask

from common import (
    DEFAULT_DATA,
    fmt_rates,
    load_mnist_task,
    log,
    matmul_gflops,
    mean_row_corr,
    table,
    timed,
)
from dattri_side import dattri_available, dattri_cpu_matrix, serve_dattri
from table1_sweep import run_sweep

# --------------------------------------------------------------------------- raytda side


def serve_raytda(model: nn.Module, data: Dataset, k: int, seed: int, compute: ComputeArgs,
                 dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, float]:
    """(scores m x n, seconds): one member's TRAK serving through the public core path."""
    t0 = time.perf_counter()
    proj = GaussianProjector(n_params(model), k, seed, compute.proj_memory_bytes,
                             compute.device, dtype, cpu_gemm=compute.cpu_gemm)
    block, _ = trak_block(model, data, proj, None, None, compute)
    _, q = forward_outputs(model, data.x_train, data.y_train, None, "train",
                           compute.forward_batch, compute.device)
    scores = trak_scores([q], [block])
    return scores, time.perf_counter() - t0


class MatrixProjector:
    """A projector with a given matrix (duck-types GaussianProjector for ``trak_block``)."""

    def __init__(self, matrix: torch.Tensor) -> None:
        self.matrix, self.k = matrix, matrix.shape[1]

    def project(self, grads: torch.Tensor) -> torch.Tensor:
        return grads @ self.matrix


@dataclass
class Breakdown:
    generate_s: float = 0.0
    grads_s: float = 0.0
    project_s: float = 0.0
    solve_s: float = 0.0
    q_s: float = 0.0
    samples: int = 0
    flops: float = 0.0  # 2 x multiply-adds the projection actually did
    extra: dict = field(default_factory=dict)

    @property
    def total_s(self) -> float:
        return self.generate_s + self.grads_s + self.project_s + self.solve_s + self.q_s


def raytda_breakdown(model: nn.Module, data: Dataset, k: int, seed: int,
                     compute: ComputeArgs) -> Breakdown:
    """The steps of ``serve_raytda`` (same functions, same order), each timed on its own."""
    br = Breakdown()
    proj = GaussianProjector(n_params(model), k, seed, compute.proj_memory_bytes,
                             compute.device, cpu_gemm=compute.cpu_gemm)
    sparse = None
    if compute.sparse_inputs:  # as trak_block decides; building it generates the grouped P
        sparse, br.generate_s = timed(lambda: SparseInputProjection.build(
            model, proj, data.x_train, compute.grad_batch))
    if sparse is None:
        _, t = timed(proj.materialize)
        br.generate_s += t
    feats = []
    for x, y, split in ((data.x_train, data.y_train, "train"),
                        (data.x_test, data.y_test, "test")):
        out = torch.empty(x.shape[0], k)
        it = (sparse.batches(model, x, y, None, split, compute.grad_batch, compute.device)
              if sparse is not None else
              per_sample_grads(model, x, y, None, split, compute.grad_batch, compute.device))
        while True:
            t0 = time.perf_counter()
            item = next(it, None)
            br.grads_s += time.perf_counter() - t0
            if item is None:
                break
            rows, g = item
            t0 = time.perf_counter()
            out[rows] = (sparse or proj).project(g)
            br.project_s += time.perf_counter() - t0
            del g
        feats.append(out)
        br.samples += x.shape[0]
    br.flops = sparse.flops if sparse is not None else 2.0 * br.samples * proj.n_params * k
    _, br.solve_s = timed(lambda: kernel_solve(feats[0], feats[1]))
    _, br.q_s = timed(lambda: forward_outputs(model, data.x_train, data.y_train, None, "train",
                                              compute.forward_batch, compute.device))
    return br


# --------------------------------------------------------------------------- serving


def run_serving(args: argparse.Namespace, task: MNISTMLPTask, data: Dataset) -> dict:
    torch.manual_seed(0)
    log(f"training one checkpoint ({args.epochs} epochs, {data.n_train} samples)")
    trained = train_model(task.build_model, task.recipe, data.x_train, data.y_train, seed=0)
    state = trained.final
    model = load_weights(task.build_model(), state, data.x_train[:1])
    p, k = n_params(model), args.proj_dim
    compute = ComputeArgs(grad_batch=args.grad_batch, cpu_gemm=args.cpu_gemm,
                          sparse_inputs=args.sparse_inputs)
    gemm_used = gemm.resolve(compute.cpu_gemm)
    log(f"CPU GEMM backend for the projection: {compute.cpu_gemm} -> {gemm_used}")
    n_all = data.n_train + data.n_test
    flops = 2.0 * n_all * p * k

    log("measuring this machine's fp32 matmul rate")
    rate_sq = [matmul_gflops(4096, 4096, 4096)]
    rate_shape = [matmul_gflops(args.grad_batch, p, k)]

    runs_r: list[float] = []
    scores_by_seed: dict[int, torch.Tensor] = {}

    def raytda_once() -> torch.Tensor:
        # Alternate two projection seeds: the agreement between them is the projection
        # noise floor that raytda-vs-dattri agreement should be read against.
        seed = 1 + len(runs_r) % 2
        s, t = serve_raytda(model, data, k, seed=seed, compute=compute)
        runs_r.append(t)
        scores_by_seed[seed] = s
        log(f"raytda serving {t:.2f} s")
        return s

    dattri: dict[int, list[float]] = {}
    agree: dict[int, float] = {}
    last_dattri = None
    bf16: list[float] = []
    bf16_agree = float("nan")
    raytda_once()  # also warms up (first-touch of the allocator, BLAS threads)
    br = raytda_breakdown(model, data, k, seed=1, compute=compute)
    log(f"raytda breakdown: {br}")
    use_dattri = not args.skip_dattri and dattri_available()
    if not args.skip_dattri and not use_dattri:
        print("NOTE: dattri is not installed (pip install dattri==0.3.0); its rows are skipped.")
    for _ in range(args.repeats):
        for b in (args.dattri_batches if use_dattri else []):
            # Interleave: raytda once per dattri run, so both see the same background load.
            ours = raytda_once()
            last_dattri, t = serve_dattri(task.build_model(), [state], data, k, b)
            dattri.setdefault(b, []).append(t)
            agree[b] = mean_row_corr(ours, last_dattri)
            log(f"dattri batch {b}: {t:.2f} s (score agreement r={agree[b]:.3f})")
        if args.bf16:
            s16, t16 = serve_raytda(model, data, k, seed=1, compute=compute,
                                    dtype=torch.bfloat16)
            bf16.append(t16)
            bf16_agree = mean_row_corr(s16, scores_by_seed[1])
            log(f"raytda bf16 serving {t16:.2f} s (r vs fp32 same seed {bf16_agree:.4f})")
    raytda_once()
    raytda_once()
    # References: what each of the two CPU-specific speed-ups is worth on its own.
    variants = {"raytda (fp32, dense projection)": replace(compute, sparse_inputs=False),
                "raytda (fp32, dense projection, torch GEMM)":
                    replace(compute, sparse_inputs=False, cpu_gemm="torch")}
    ref_runs: dict[str, list[float]] = {}
    for name, variant in variants.items():
        for _ in range(2):
            ref_runs.setdefault(name, []).append(
                serve_raytda(model, data, k, seed=1, compute=variant)[1])
            log(f"{name}: {ref_runs[name][-1]:.2f} s")
    # A second instrumented run once the dattri runs are done; keep the quieter one.
    br2 = raytda_breakdown(model, data, k, seed=1, compute=compute)
    log(f"raytda breakdown: {br2}")
    br = min(br, br2, key=lambda b: b.total_s)
    rate_sq.append(matmul_gflops(4096, 4096, 4096))
    rate_shape.append(matmul_gflops(args.grad_batch, p, k))

    same = None
    if last_dattri is not None:
        # Same projection on both sides: the scores must then agree up to float error.
        log("checking raytda against dattri with dattri's own projection matrix")
        proj = MatrixProjector(dattri_cpu_matrix(p, k))
        block, _ = trak_block(model, data, proj, None, None, compute)  # type: ignore[arg-type]
        _, q = forward_outputs(model, data.x_train, data.y_train)
        same = trak_scores([q], [block])
        del proj, block

    machine = max(max(r.values()) for r in rate_sq + rate_shape)
    r_best = min(runs_r)
    out = {"raytda_s": r_best, "raytda_runs": runs_r, "dattri": dattri, "agree": agree,
           "breakdown": br, "machine_gflops": machine, "p": p}

    norm = task.settings["normalize"]
    inputs = "pixels / 255" if norm is None else f"inputs normalized (mean {norm[0]}, std {norm[1]})"
    print(f"\n## TRAK serving, MNIST-MLP ({p:,} params), k={k}, "
          f"{data.n_train} train + {data.n_test} test, {inputs}, I=1, CPU, "
          f"{torch.get_num_threads()} torch threads\n")
    noise = mean_row_corr(scores_by_seed[1], scores_by_seed[2]) if len(scores_by_seed) > 1 \
        else float("nan")
    path = "zero inputs skipped" if compute.sparse_inputs else "dense projection"
    rows = [[f"raytda (fp32, {path}, {gemm_used} GEMM)", f"{compute.grad_batch}", f"{r_best:.2f}",
             f"{statistics.median(runs_r):.2f}", f"{n_all / r_best:.0f}", "1.00",
             f"{noise:.3f} (other seed)"]]
    for name, ts in ref_runs.items():
        rows.append([name, f"{compute.grad_batch}", f"{min(ts):.2f}",
                     f"{statistics.median(ts):.2f}", f"{n_all / min(ts):.0f}",
                     f"{min(ts) / r_best:.2f}", ""])
    if bf16:
        rows.append(["raytda, bf16 projection (option)", f"{compute.grad_batch}",
                     f"{min(bf16):.2f}", f"{statistics.median(bf16):.2f}",
                     f"{n_all / min(bf16):.0f}", f"{min(bf16) / r_best:.2f}",
                     f"{bf16_agree:.4f} (same seed)"])
    best_d = None
    for b, ts in dattri.items():
        tb = min(ts)
        best_d = tb if best_d is None else min(best_d, tb)
        rows.append(["dattri 0.3.0 TRAKAttributor", f"{b}", f"{tb:.2f}",
                     f"{statistics.median(ts):.2f}", f"{n_all / tb:.0f}",
                     f"{tb / r_best:.2f}", f"{agree[b]:.3f}"])
    print(table(["implementation", "batch", "best s", "median s", "samples/s",
                 "time / raytda", "score r vs raytda"], rows))
    if best_d is not None:
        print(f"\nraytda (fp32) vs dattri at its best batch: {best_d / r_best:.2f}x faster "
              f"(best of runs on each side; raytda runs "
              f"{', '.join(f'{t:.1f}' for t in runs_r)} s)")
        out["speedup"] = best_d / r_best
    print("\nscore r: mean over test samples of the Pearson correlation of the score rows. "
          "Different projection seeds alone give the 'other seed' value.")
    if same is not None:
        r_same = mean_row_corr(same, last_dattri)
        rel = float((same - last_dattri).norm() / last_dattri.norm())
        print(f"Same math check: raytda's pipeline run with dattri's projection matrix vs "
              f"dattri's scores: r = {r_same:.5f}, relative L2 difference {rel:.1e} "
              f"(dattri solves in float32, raytda in float64).")

    print("\n## Where raytda's serving time goes (instrumented run, quieter of two)\n")
    rows = [
        ["projection matrix (generate, resident)", f"{br.generate_s:.2f}", ""],
        ["per-sample gradients", f"{br.grads_s:.2f}", f"{br.samples / br.grads_s:.0f} samples/s"],
        ["projection matmul G @ P", f"{br.project_s:.2f}",
         f"{br.flops / br.project_s / 1e9:.0f} GFLOP/s done, "
         f"{br.flops / flops:.0%} of the dense product's"],
        ["kernel solve (float64)", f"{br.solve_s:.2f}", ""],
        ["Q = 1 - p (forward)", f"{br.q_s:.2f}", ""],
        ["sum", f"{br.total_s:.2f}", f"{br.samples / br.total_s:.0f} samples/s"],
    ]
    print(table(["step", "seconds", "rate"], rows))

    # Rates count the multiply-adds actually done (fewer than 2*n*p*k when zero inputs
    # are skipped), so they measure how well the GEMMs run, not the skipping.
    achieved = br.flops / br.project_s / 1e9
    achieved_gen = br.flops / (br.project_s + br.generate_s) / 1e9
    print("\n## Projection GFLOP/s vs this machine's fp32 matmul (same run)\n")
    rows = [
        ["machine: square 4096 SGEMM (start / end)", fmt_rates(rate_sq), ""],
        [f"machine: GEMM of the projection's shape ({compute.grad_batch} x {p}) @ ({p} x {k})",
         fmt_rates(rate_shape), ""],
        ["raytda projection, matmul only (FLOPs done / time)", f"{achieved:.0f}",
         f"{100 * achieved / machine:.0f}%"],
        ["raytda projection incl. generating P", f"{achieved_gen:.0f}",
         f"{100 * achieved_gen / machine:.0f}%"],
    ]
    print(table(["what", "GFLOP/s", "of machine best"], rows))
    out["projection_fraction"] = achieved / machine
    return out


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("RAYTDA_MNIST", str(DEFAULT_DATA)),
                    help="directory with the MNIST IDX files (default: %(default)s)")
    ap.add_argument("--n-train", type=int, default=5000)
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=10,
                    help="training epochs of the served checkpoint (serving cost does not "
                         "depend on it; the paper's recipe uses 100)")
    ap.add_argument("--proj-dim", type=int, default=2048)
    ap.add_argument("--grad-batch", type=int, default=ComputeArgs().grad_batch,
                    help="raytda's per-sample gradient batch")
    ap.add_argument("--dattri-batches", type=lambda s: [int(b) for b in s.split(",")],
                    default=[64, 500, 1000], help="comma-separated (default: 64,500,1000)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="passes over the dattri batch sizes (each paired with a raytda run)")
    ap.add_argument("--skip-dattri", action="store_true")
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                    help="also time raytda with a bfloat16 projection (an option, not the "
                         "default; reported beside, never instead of, fp32)")
    ap.add_argument("--skip-serving", action="store_true",
                    help="with --sweep: only the sweep (the dattri loop then runs, or is "
                         "estimated from one member served at each --dattri-batches size)")
    ap.add_argument("--sweep", action="store_true",
                    help="also time a Table-1-style sweep (raytda side ~10+ min on 2 cores)")
    ap.add_argument("--with-dattri-sweep", action="store_true",
                    help="with --sweep: run the dattri loop for real (hours on 2 cores) "
                         "instead of estimating it")
    ap.add_argument("--sweep-max-i", type=int, default=5)
    ap.add_argument("--sweep-d", type=int, default=10)
    ap.add_argument("--sweep-epochs", type=int, default=10)
    ap.add_argument("--sparse-inputs", action=argparse.BooleanOptionalAction, default=True,
                    help="skip the projection work of exactly-zero inputs (raytda's default; "
                         "same features)")
    ap.add_argument("--cpu-gemm", choices=gemm.BACKENDS, default="auto",
                    help="BLAS for raytda's projection: auto (faster of the two, measured), "
                         "torch (MKL) or numpy (OpenBLAS)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (default: torch's choice)")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_mnist_task(args)
    if loaded is None:
        return 0
    task, data = loaded
    print(f"# raytda serving benchmark ({time.strftime('%Y-%m-%d %H:%M')}, torch "
          f"{torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.1f} at start)")
    np.random.seed(0)
    serving = None if args.skip_serving else run_serving(args, task, data)
    if args.sweep:
        run_sweep(args, task, data, serving)
    print(f"\n(load average {os.getloadavg()[0]:.1f} at end)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
