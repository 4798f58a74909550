"""Scaling of the Ray executor's actor pool on the default digits sweep, in one run.

The workload is ``raytda sweep``'s default: digits-mlp, naive I=1,2,3,5 and Dropout
I=1,2,3,5 x D=10, TRAK, 50 LDS models. Each configuration runs it into a fresh store:

* ``local``: the in-process executor (one job at a time, torch threads = 1);
* ``ray xN``: the Ray executor with at most N CPU actors (default 1 and 2), each holding
  one CPU (its torch thread count);
* ``gpu xN`` (only when CUDA is available): N actors sharing one GPU, 1/N of it each
  (default 1, 2, 4, 8; Ray's fractional GPUs, torch capped at that share of memory).

Two timings per configuration: the whole sweep (a Ray run includes starting its actors),
and then its 50 LDS trainings alone (a plan of just those jobs into another fresh store,
on the same, now warm, executor: the in-process run reuses its warm process just the
same). And the costs the results table reports (``train_time_s``, ``serve_time_s`` per
configuration), as the ratio to the in-process run: the same resources (``measured_on``)
should give the same cost on every executor. Configurations are interleaved per repeat,
so all see the same background load; walls are the best of ``--repeats``, and so is each
configuration's cost (background load only ever inflates a time).

Usage::

    python benchmarks/bench_scaling.py                  # CPU rows (and GPU rows with CUDA)
    python benchmarks/bench_scaling.py --repeats 2 --ray-workers 1,2
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

TARGET_SPEEDUP = 1.6  # of the LDS trainings on 2 actors, vs in-process
TARGET_COST_TOL = 0.15  # cost columns vs in-process


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ray-workers", default="1,2", help="CPU actor counts (comma-separated)")
    p.add_argument("--gpu-workers", default="1,2,4,8",
                   help="actors sharing one GPU (only when CUDA is available)")
    p.add_argument("--repeats", type=int, default=1, help="best of this many runs each")
    p.add_argument("--sweep-args", default="", help="extra `raytda sweep` flags, e.g. "
                   "'--lds-m 10' for a quick look (the default is the full default sweep)")
    return p.parse_args(argv)


def build(store: Path, executor: Any, extra: list[str]):
    from raytda.cli import build_sweep, parser

    sweep = build_sweep(parser().parse_args(["sweep", "--store", str(store), "--quiet",
                                             *extra]))
    sweep._executor = executor
    return sweep


def run_one(name: str, make_executor, root: Path, extra: list[str]) -> dict[str, Any]:
    """The whole sweep, then its LDS trainings alone, each into a fresh store."""
    from raytda.plan.planner import Plan

    ex = make_executor()
    sweep = build(root / f"{name}-sweep", ex, extra)
    t0 = time.perf_counter()
    df = sweep.run()
    wall = time.perf_counter() - t0
    workers = {k: dict(v) for k, v in getattr(ex, "workers", {}).items()}
    lds = build(root / f"{name}-lds", ex, extra)
    jobs = [j for j in lds.plan().jobs if j.kind == "ldsmodel"]
    t0 = time.perf_counter()
    ex.execute(Plan(jobs=jobs, evaluations=[], cached=set()), lds.store)
    lds_wall = time.perf_counter() - t0
    if hasattr(ex, "stop_workers"):
        ex.stop_workers()
    lds_train = [lds.store.meta(j.key)["train_time_s"] for j in jobs]
    return {"name": name, "wall": wall, "lds_wall": lds_wall, "n_lds": len(jobs),
            "lds_train_mean": sum(lds_train) / len(lds_train), "df": df, "workers": workers}


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    import ray
    import torch

    from raytda.core.args import ComputeArgs
    from raytda.run.local import InProcessExecutor
    from raytda.run.ray_executor import RayExecutor

    extra = a.sweep_args.split()
    cuda = torch.cuda.is_available()
    cpu_counts = [int(x) for x in a.ray_workers.split(",") if x]
    gpu_counts = [int(x) for x in a.gpu_workers.split(",") if x] if cuda else []
    n_cpus = max([*cpu_counts, *gpu_counts, 1])
    ray.init(address="local", num_cpus=n_cpus, num_gpus=1 if cuda else 0,
             include_dashboard=False, object_store_memory=200 * 1024**2,
             logging_level="WARNING", log_to_driver=False)

    def local() -> InProcessExecutor:
        return InProcessExecutor(ComputeArgs(), progress=False)

    def on_ray(n: int, gpu: bool = False):
        def make() -> RayExecutor:
            return RayExecutor(ComputeArgs(device="cuda" if gpu else "cpu"), progress=False,
                               shutdown=False, max_workers=n, keep_workers=True,
                               gpu_fraction=(1.0 / n) if gpu else None)
        return make

    configs = [("local", local)] + [(f"ray x{n}", on_ray(n)) for n in cpu_counts] \
        + [(f"gpu x{n}", on_ray(n, True)) for n in gpu_counts]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in configs}
    with tempfile.TemporaryDirectory(prefix="raytda-bench-") as tmp:
        for r in range(a.repeats):
            for name, make in configs:
                row = run_one(f"{name.replace(' ', '')}-{r}", make, Path(tmp), extra)
                runs[name].append(row)
                print(f"  repeat {r}: {name}: sweep {row['wall']:.1f} s, "
                      f"LDS {row['lds_wall']:.1f} s", file=sys.stderr, flush=True)
    ray.shutdown()
    best: dict[str, dict[str, Any]] = {}
    for name, rows in runs.items():
        top = min(rows, key=lambda x: x["wall"])
        costs = rows[0]["df"].set_index("label")[["train_time_s", "serve_time_s"]]
        for x in rows[1:]:
            costs = costs.combine(x["df"].set_index("label")[costs.columns], np.fmin)
        df = top["df"].set_index("label")
        df[costs.columns] = costs.loc[df.index]
        best[name] = {**top, "df": df.reset_index(),
                      "lds_wall": min(x["lds_wall"] for x in rows),
                      "lds_train_mean": min(x["lds_train_mean"] for x in rows)}

    ref = best["local"]
    ref_df = ref["df"].set_index("label")
    what = f"`raytda sweep {a.sweep_args}`" if a.sweep_args else "default digits sweep"
    print(f"raytda scaling: {what} ({len(ref_df)} configurations, {ref['n_lds']} LDS models); "
          f"{platform.node()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"ray {ray.__version__}, python {sys.version.split()[0]}; best of {a.repeats}")
    print(f"{'executor':<9} {'sweep s':>8} {'vs local':>8} {'LDS s':>7} {'LDS x':>6} "
          f"{'LDS job s':>9} {'train/local':>11} {'serve/local':>11}  measured_on")
    for name, row in best.items():
        df = row["df"].set_index("label").loc[ref_df.index]
        tr = (df["train_time_s"] / ref_df["train_time_s"]).mean()
        sv = (df["serve_time_s"] / ref_df["serve_time_s"]).mean()
        on = ", ".join(sorted(set(df["measured_on"])))
        print(f"{name:<9} {row['wall']:>8.1f} {ref['wall'] / row['wall']:>8.2f} "
              f"{row['lds_wall']:>7.1f} {ref['lds_wall'] / row['lds_wall']:>6.2f} "
              f"{row['lds_train_mean']:>9.2f} {tr:>11.3f} {sv:>11.3f}  {on}")
    two = best.get("ray x2")
    if two is not None:
        df = two["df"].set_index("label").loc[ref_df.index]
        dev = max(((df[c] / ref_df[c]) - 1).abs().max() for c in ("train_time_s", "serve_time_s"))
        print(f"\nray x2 vs local: whole sweep {ref['wall'] / two['wall']:.2f}x "
              f"(target >= 1), LDS trainings {ref['lds_wall'] / two['lds_wall']:.2f}x (target >= "
              f"{TARGET_SPEEDUP}), largest per-configuration cost deviation {dev:.1%} (target "
              f"<= {TARGET_COST_TOL:.0%})")
        for w, info in sorted(two["workers"].items()):
            loads = info.get("loads", {})
            print(f"  {w}: {loads.get('jobs', 0)} jobs, data loaded {loads.get('data_loads', 0)}x, "
                  f"models read {loads.get('model_loads', 0)} (kept copy used "
                  f"{loads.get('model_hits', 0)}x), projections built "
                  f"{loads.get('projections_built', 0)} (reused {loads.get('projection_hits', 0)}x)")
    if not cuda:
        print("(no CUDA device here: fractional-GPU rows skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
