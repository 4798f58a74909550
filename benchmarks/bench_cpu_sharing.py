"""What sharing a core does to a job's CPU time: the same training job alone on a CPU,
then sharing that CPU with one ``yes`` process, then beside two unpinned ``yes``.

raytda charges a job the CPU time of its thread (:mod:`raytda.core.costs`), on the
premise that it does not depend on what else runs. This measures the premise on the
machine at hand. Per condition, ``--jobs`` digits-mlp members (the built-in, 1,000 rows,
30 epochs, one torch thread, raytda's ``fit``: its loop's CPU time is what a training
job reports) train one after the other in a fresh process pinned to ``--cpu``, with:

* ``alone``: nothing else pinned there;
* ``shared``: one ``yes > /dev/null`` pinned to the same CPU (the kernel time-slices the
  two);
* ``2 hogs``: two unpinned ``yes`` and the job unpinned, as ``bench_scaling.py`` runs them.

Reported per job: the loop's CPU seconds (``train_time_s``), its thread's involuntary
context switches (``getrusage(RUSAGE_THREAD).ru_nivcsw``), and the wall time. If CPU time
were independent of sharing, ``shared`` would cost what ``alone`` costs (at twice the
wall time).

    python benchmarks/bench_cpu_sharing.py --jobs 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import table  # noqa: E402


def train_jobs(n: int) -> list[dict]:
    """``n`` digits-mlp members trained by ``fit``, each with its cost, switches, wall."""
    import resource
    import time

    import torch

    from raytda.core.train import fit, seeded_init
    from raytda.tasks import get_task

    torch.set_num_threads(1)
    task = get_task("digits-mlp")
    x, y = task.train_data()[:2]
    out = []
    for seed in range(n):
        seeded_init(seed)
        model = task.build_model()
        before, t0 = resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw, time.perf_counter()
        _, cost = fit(model, task.recipe, (x, y), seed, loss_fn=task.loss, forward=task.forward)
        out.append({"cost_s": cost, "wall_s": time.perf_counter() - t0, "switches":
                    resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw - before})
    return out


def hogs(n: int, cpu: int | None) -> list[subprocess.Popen]:
    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
    return [subprocess.Popen([*pin, "yes"], stdout=subprocess.DEVNULL) for _ in range(n)]


def condition(name: str, jobs: int, cpu: int | None, n_hogs: int, hog_cpu: int | None) -> dict:
    procs = hogs(n_hogs, hog_cpu)
    try:
        pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
        done = subprocess.run([*pin, sys.executable, __file__, "--child", str(jobs)],
                              capture_output=True, text=True, check=True)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=10)
    return {"name": name, "jobs": json.loads(done.stdout)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--jobs", type=int, default=4, help="training jobs per condition")
    p.add_argument("--cpu", type=int, default=1, help="the CPU the pinned conditions use")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(train_jobs(a.child)))
        return 0
    print(f"# a job's CPU time when its core is shared: {platform.machine()}, "
          f"{os.cpu_count()} CPUs, kernel {platform.release()}; load average at start "
          f"{os.getloadavg()[0]:.2f}\n")
    runs = [condition("alone", a.jobs, a.cpu, 0, None),
            condition("shared", a.jobs, a.cpu, 1, a.cpu),
            condition("2 hogs", a.jobs, None, 2, None),
            condition("alone again", a.jobs, a.cpu, 0, None)]
    base = statistics.mean(j["cost_s"] for j in runs[0]["jobs"])
    rows = []
    for r in runs:
        costs = [j["cost_s"] for j in r["jobs"]]
        rows.append([r["name"], " ".join(f"{c:.3f}" for c in costs),
                     f"{statistics.mean(costs):.3f}", f"{statistics.mean(costs) / base:.2f}",
                     " ".join(str(j["switches"]) for j in r["jobs"]),
                     " ".join(f"{j['wall_s']:.2f}" for j in r["jobs"])])
    print(table(["condition", "CPU s per job", "mean", "/ alone", "involuntary switches",
                 "wall s"], rows))
    print(f"\nload average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
