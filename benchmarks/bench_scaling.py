"""Costs of one sweep three ways, one run each: in-process, in-process beside two CPU hogs,
and on a Ray cluster started as users start one (`ray start --head`, dashboard on).

The workload (``--sweep``) is by default the digits sweep of issue 29: naive I = 1, 2, 3
and Dropout I = 1, 2 x D = 5, TRAK, 30 LDS models. Each run is `raytda sweep` into a fresh
store through the CLI, in its own process:

* ``quiet``: in-process (one job at a time, torch threads = 1), nothing added;
* ``hogs``: the same, with two ``yes > /dev/null`` processes started by this script
  beside it (killed by process id after);
* ``ray``: a head with ``--cpus`` logical CPUs (default 2) and its dashboard on, on
  127.0.0.1 with its own temp dir and token (``benchmarks/cluster.py``), stopped by
  process id afterwards;
* ``quiet again`` (unless ``--no-noise-floor``): ``quiet`` once more, last: how far two
  runs of the same kind lie apart on this machine now, which the other ratios are read
  against.

A cost is the CPU time of a job's thread (:mod:`raytda.core.costs`), so it should not
depend on what else runs: the script prints, per configuration, the training and serving
cost of ``hogs`` and ``ray`` as a ratio to ``quiet`` (target: within 10%), the sweep wall
times (target: Ray no slower than in-process), and the load each run ran under (the
1-minute load average sampled every 2 s during the run: the machine may be shared, so
``quiet`` is only as quiet as it was).

Usage::

    python benchmarks/bench_scaling.py
    python benchmarks/bench_scaling.py --cpus 2 --sweep "--setting digits-mlp ..."
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cluster import ray_head
from common import log, table

SWEEP = ("--setting digits-mlp --ensemble naive:I=1|2|3 --ensemble dropout:I=1|2,D=5 "
         "--lds-m 30")
TARGET_COST_TOL = 0.10
COSTS = ("train_time_s", "serve_time_s")


@dataclass
class Run:
    """One sweep: its wall time, results table and the load it ran under."""

    name: str
    wall_s: float
    df: pd.DataFrame
    load: list[float]
    jobs: dict[str, dict[str, float]]  # kind -> {key: its cost}, every job that ran


def job_costs(store_root: Path) -> dict[str, dict[str, float]]:
    """Every stored job's own cost (CPU or device s), by kind: the same job has the same
    key in every run (keys are content hashes), so runs compare job by job, LDS trainings
    (nobody's cost) included."""
    from raytda.store import ArtifactStore

    store, out = ArtifactStore(str(store_root)), {}
    for kind_dir in sorted(p for p in store_root.iterdir() if p.is_dir()):
        if kind_dir.name in ("result", "scores"):  # configurations' sums, score chunks
            continue
        costs = {}
        for key in store.keys(kind_dir.name):
            meta = store.meta(key)
            field = "train_time_s" if "train_time_s" in meta else "serve_time_s"
            if field in meta and meta[field] > 0:
                costs[key] = float(meta[field])
        if costs:
            out[kind_dir.name] = costs
    return out


@contextmanager
def load_sampled(every_s: float = 2.0) -> Iterator[list[float]]:
    """The 1-minute load average every ``every_s`` while the block runs."""
    out: list[float] = [os.getloadavg()[0]]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(every_s):
            out.append(os.getloadavg()[0])

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        yield out
    finally:
        stop.set()
        t.join()
        out.append(os.getloadavg()[0])


@contextmanager
def cpu_hogs(n: int) -> Iterator[list[int]]:
    """``n`` ``yes > /dev/null`` processes beside the block; killed by pid after."""
    procs = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(n)]
    try:
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=10)


def run_sweep(name: str, out: Path, extra: list[str], env: dict[str, str] | None = None) -> Run:
    """`raytda sweep` into a fresh OUT: its wall time, results and the load meanwhile."""
    cmd = [sys.executable, "-m", "raytda.cli", "sweep", "--out", str(out), "--quiet", *extra]
    with load_sampled() as load:
        t0 = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed:\n{done.stderr[-3000:]}")
    df = pd.read_parquet(out / "results.parquet").set_index("label")
    log(f"{name}: sweep {wall:.1f} s, load average {min(load):.1f}-{max(load):.1f}")
    return Run(name, wall, df, load, job_costs(out / "store"))


def ray_sweep(num_cpus: int, out: Path, extra: list[str]) -> Run:
    """The sweep on a fresh head with ``num_cpus`` CPUs and its dashboard on; once more on
    another fresh head if the first one went away before the sweep could join it."""
    for attempt in (1, 2):
        with ray_head(num_cpus, dashboard=True) as head:
            try:
                return run_sweep(f"ray {num_cpus}", out, [*extra, "--address", head.address],
                                 head.env)
            except RuntimeError as e:
                if attempt == 2 or "cannot reach a Ray cluster" not in str(e):
                    raise
                log(f"ray {num_cpus}: the head was gone before the sweep joined it; "
                    f"once more on a new head")
                shutil.rmtree(out, ignore_errors=True)
    raise AssertionError("unreachable")


def actors_used(out: Path) -> int:
    """How many actors made the sweep's artifacts (the ``worker`` each artifact's record
    names; 0 in-process)."""
    import json

    workers = set()
    for f in (out / "store").rglob("*.json"):
        w = json.loads(f.read_text()).get("meta", {}).get("worker")
        if w and w.startswith("raytda-worker-"):
            workers.add(w)
    return len(workers)


def report(runs: list[Run], sweep: str, actors: int) -> str:
    import ray
    import torch

    quiet, others = runs[0], runs[1:]
    ref = quiet.df
    headers = ["configuration", "train quiet s", "serve quiet s"]
    for r in others:
        headers += [f"train {r.name}/quiet", f"serve {r.name}/quiet"]
    rows, worst = [], {r.name: 0.0 for r in others}
    for label in ref.index:
        row = [label, f"{ref.loc[label, COSTS[0]]:.3f}", f"{ref.loc[label, COSTS[1]]:.3f}"]
        for r in others:
            for col in COSTS:
                ratio = r.df.loc[label, col] / ref.loc[label, col]
                worst[r.name] = max(worst[r.name], abs(ratio - 1))
                row.append(f"{ratio:.3f}")
        rows.append(row)
    head = (f"raytda cost fidelity: `raytda sweep {sweep}`; {platform.node()}, "
            f"{os.cpu_count()} CPUs, torch {torch.__version__}, ray {ray.__version__}; "
            f"one run each; costs in {', '.join(sorted(set(ref['cost_clock'])))} seconds")
    runs_table = table(
        ["run", "sweep wall s", "wall / quiet", "load average during (min-mean-max)",
         "largest cost deviation", "measured_on"],
        [[r.name, f"{r.wall_s:.1f}", f"{r.wall_s / quiet.wall_s:.2f}",
          f"{min(r.load):.1f}-{sum(r.load) / len(r.load):.1f}-{max(r.load):.1f}",
          "-" if r is quiet else f"{worst[r.name]:.1%} (target <= {TARGET_COST_TOL:.0%})",
          ", ".join(sorted(set(r.df["measured_on"])))] for r in runs])
    walls = table(["configuration", *(f"{c} wall {r.name} s" for r in runs for c in
                                      ("train", "serve"))],
                  [[label, *(f"{r.df.loc[label, c]:.3f}" for r in runs
                             for c in ("train_wall_s", "serve_wall_s"))] for label in ref.index])
    per_job = []
    for r in others:
        for kind, costs in quiet.jobs.items():
            ratios = sorted(r.jobs.get(kind, {})[k] / v for k, v in costs.items()
                            if k in r.jobs.get(kind, {}))
            if ratios:
                mid = ratios[len(ratios) // 2]
                per_job.append([r.name, kind, len(ratios), f"{sum(costs.values()):.2f}",
                                f"{ratios[0]:.3f}", f"{mid:.3f}", f"{ratios[-1]:.3f}"])
    jobs_table = table(["run", "job kind", "jobs", "quiet CPU s (sum)", "min ratio to quiet",
                        "median", "max"], per_job)
    return "\n\n".join([head, table(headers, rows), runs_table,
                        "each job's own cost against the same job's (same key) in the quiet "
                        "run:", jobs_table,
                        f"actors on Ray: {actors}; wall seconds of the same work, per run "
                        f"(recorded, never charged):", walls])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpus", type=int, default=2, help="logical CPUs of the `ray start` head")
    p.add_argument("--hogs", type=int, default=2, help="`yes > /dev/null` processes beside "
                                                       "the second run")
    p.add_argument("--sweep", default=SWEEP, help=f"`raytda sweep` flags (default: {SWEEP!r})")
    p.add_argument("--no-noise-floor", action="store_true",
                   help="skip the second in-process run")
    a = p.parse_args(argv)
    extra = shlex.split(a.sweep)
    with tempfile.TemporaryDirectory(prefix="raytda-scaling-") as tmp:
        runs = [run_sweep("quiet", Path(tmp) / "quiet", extra)]
        with cpu_hogs(a.hogs) as pids:
            log(f"{a.hogs} CPU hogs started (pids {pids})")
            runs.append(run_sweep(f"{a.hogs} hogs", Path(tmp) / "hogs", extra))
        runs.append(ray_sweep(a.cpus, Path(tmp) / "ray", extra))
        actors = actors_used(Path(tmp) / "ray")
        if not a.no_noise_floor:
            runs.append(run_sweep("quiet again", Path(tmp) / "quiet2", extra))
    print(report(runs, a.sweep, actors))
    return 0


if __name__ == "__main__":
    sys.exit(main())
