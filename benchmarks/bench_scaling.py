"""Strong scaling of the Ray executor: one fixed set of training jobs, more workers.

The jobs are N ensemble-model trainings of one setting (distinct seeds, so nothing is
cached), run through :class:`raytda.run.ray_executor.RayExecutor` into a fresh store per
configuration. The number of workers is the executor's in-flight bound on one Ray
runtime, so every configuration uses the same warm worker processes:

* CPU: 1 and 2 workers (more with ``--cpu-workers``), one CPU per job;
* GPU (when CUDA is available): 1, 2, 4, 8 jobs sharing one GPU, each asking for
  1/n of it (Ray's fractional GPUs; torch also caps each at that share of memory).

Usage::

    python benchmarks/bench_scaling.py                    # digits-mlp, 12 trainings
    python benchmarks/bench_scaling.py --setting toy-mlp --jobs 16 --cpu-workers 1,2
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--setting", default="digits-mlp")
    p.add_argument("--jobs", type=int, default=12, help="trainings per configuration")
    p.add_argument("--cpu-workers", default="1,2", help="comma-separated worker counts")
    p.add_argument("--gpu-workers", default="1,2,4,8",
                   help="jobs sharing one GPU (only when CUDA is available)")
    p.add_argument("--epochs", type=int, default=None, help="override the setting's epochs")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--repeats", type=int, default=1, help="best of this many runs each")
    return p.parse_args(argv)


def run_config(jobs, executor, root: Path) -> tuple[float, list[float]]:
    """Wall time of running ``jobs`` into a fresh store, and the per-job train times."""
    from raytda.plan.planner import Plan
    from raytda.store import ArtifactStore

    store = ArtifactStore(str(root))
    plan = Plan(jobs=list(jobs), evaluations=[], cached=set())
    t0 = time.perf_counter()
    executor.execute(plan, store)
    wall = time.perf_counter() - t0
    assert len(store.keys("model")) == len(jobs), "not every job produced its artifact"
    return wall, [store.meta(j.key)["train_time_s"] for j in jobs]


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    import ray
    import torch

    from raytda.core.args import ComputeArgs
    from raytda.plan.jobs import TrainModel
    from raytda.run.ray_executor import RayExecutor
    from raytda.settings import get_setting
    from raytda.tasks import SettingTask

    overrides = {"epochs": a.epochs} if a.epochs else {}
    setting = get_setting(a.setting, data_dir=a.data_dir, **overrides)
    cuda = torch.cuda.is_available()
    cpu_counts = [int(x) for x in a.cpu_workers.split(",") if x]
    gpu_counts = [int(x) for x in a.gpu_workers.split(",") if x] if cuda else []
    n_cpus = max([*cpu_counts, *gpu_counts, 1])
    ray.init(num_cpus=n_cpus, num_gpus=1 if cuda else 0, include_dashboard=False,
             object_store_memory=200 * 1024**2, logging_level="WARNING", log_to_driver=False)

    base = 1000  # distinct seeds per run so nothing is ever cached
    configs = [("cpu", n) for n in cpu_counts] + [("gpu", n) for n in gpu_counts]
    rows = []
    with tempfile.TemporaryDirectory(prefix="raytda-bench-") as tmp:
        def jobs_for(tag: int) -> list[TrainModel]:
            return [TrainModel(SettingTask(setting), i, base_seed=base + tag)
                    for i in range(a.jobs)]

        # Warm-up: start every worker process and load the data once in each.
        for device, n in configs:
            compute = ComputeArgs(device="cuda" if device == "gpu" else "cpu")
            ex = RayExecutor(compute, progress=False, shutdown=False, max_in_flight=n,
                             gpu_fraction=1.0 / n if device == "gpu" else None)
            run_config(jobs_for(0)[:n], ex, Path(tmp) / f"warm-{device}-{n}")
            base += 1
        for device, n in configs:
            compute = ComputeArgs(device="cuda" if device == "gpu" else "cpu")
            ex = RayExecutor(compute, progress=False, shutdown=False, max_in_flight=n,
                             gpu_fraction=1.0 / n if device == "gpu" else None)
            best = None
            for r in range(a.repeats):
                base += 1
                wall, per_job = run_config(jobs_for(r), ex, Path(tmp) / f"{device}-{n}-{base}")
                if best is None or wall < best[0]:
                    best = (wall, per_job)
            rows.append((device, n, *best))
    ray.shutdown()

    print(f"raytda scaling: {a.jobs} x train {setting.name} ({setting.recipe.epochs} epochs, "
          f"n_train={setting.data.n_train}); {platform.node()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, ray {ray.__version__}, python {sys.version.split()[0]}")
    print(f"{'device':<7} {'workers':>7} {'share':>6} {'wall s':>8} {'jobs/s':>7} "
          f"{'mean job s':>10} {'speedup':>8} {'efficiency':>10}")
    ref: dict[str, tuple[float, int]] = {}
    for device, n, wall, per_job in rows:
        ref.setdefault(device, (wall, n))  # each device's first (smallest) row
        speed = ref[device][0] / wall
        eff = speed * ref[device][1] / n
        share = f"{1 / n:.3g}" if device == "gpu" else "1 CPU"
        print(f"{device:<7} {n:>7} {share:>6} {wall:>8.2f} {a.jobs / wall:>7.2f} "
              f"{sum(per_job) / len(per_job):>10.2f} {speed:>8.2f} {eff:>10.2f}")
    if not cuda:
        print("(no CUDA device here: fractional-GPU rows skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
