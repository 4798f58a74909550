"""Costs and wall time of one sweep, in-process and on a Ray cluster started as users
start one (`ray start --head --num-cpus=N`, then `raytda sweep --address ...`), in one run.

The workload (``--sweep``) is by default the digits sweep of the cost-fidelity issue:
naive I = 1, 2, 3 and Dropout I = 1, 2 x D = 5, TRAK, 30 LDS models. Each executor runs it
into a fresh store through the CLI, each in its own process:

* ``local``: ``raytda sweep`` in-process (one job at a time, torch threads = 1);
* ``ray N``: a head with N logical CPUs (default 2, and 4 on a 2-core machine, a node
  that declares more CPUs than it has), one actor per CPU up to one per core the machine
  has (:func:`raytda.run.policy.node_room`).

It prints, per configuration, the training and serving cost on each cluster as a ratio
to the in-process run (the same configuration on the same resources, ``measured_on``,
should cost the same wherever it ran: target within 15%), how the costs were timed
(``timing``: costed jobs hold their node's timing slot, alone or, on Ray, beside others of
their work class once one of the class was timed alone; raytda.run.timing_slot), and the
whole sweep's wall time and actor count per executor. With ``--repeats`` > 1 it also prints the
in-process repeats' spread per configuration (largest / smallest - 1 of the same work in
the same process kind): the noise floor the ratios are read against. Executors are
interleaved per repeat, so all see the same background load, and each cost is the best
of ``--repeats`` (load only ever inflates a time).

Usage::

    python benchmarks/bench_scaling.py                          # local, ray 2, ray 4
    python benchmarks/bench_scaling.py --cpus 2 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from cluster import ray_head
from common import log, table

SWEEP = ("--setting digits-mlp --ensemble naive:I=1|2|3 --ensemble dropout:I=1|2,D=5 "
         "--lds-m 30")
TARGET_COST_TOL = 0.15


def run_sweep(out: Path, extra: list[str], env: dict[str, str] | None = None) -> tuple[float, pd.DataFrame]:
    """`raytda sweep` into a fresh OUT; its wall time and results table."""
    cmd = [sys.executable, "-m", "raytda.cli", "sweep", "--out", str(out), "--quiet", *extra]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return wall, pd.read_parquet(out / "results.parquet").set_index("label")


def ray_sweep(num_cpus: int, out: Path, extra: list[str]) -> tuple[float, pd.DataFrame]:
    """The sweep on a fresh head with ``num_cpus`` CPUs; once more on another fresh head
    if the first one went away before the sweep could join it (seen once in 30 runs:
    its GCS port refused the connection right after `ray status` had answered)."""
    for attempt in (1, 2):
        with ray_head(num_cpus) as head:
            try:
                return run_sweep(out, [*extra, "--address", head.address], head.env)
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpus", default="2,4", help="logical CPUs of each `ray start` head")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--sweep", default=SWEEP, help=f"`raytda sweep` flags (default: {SWEEP!r})")
    a = p.parse_args(argv)
    extra = shlex.split(a.sweep)
    cpus = [int(c) for c in a.cpus.split(",") if c]
    names = ["local", *(f"ray {n}" for n in cpus)]
    walls: dict[str, list[float]] = {n: [] for n in names}
    tables: dict[str, list[pd.DataFrame]] = {n: [] for n in names}
    actors: dict[str, set[int]] = {n: set() for n in names}
    with tempfile.TemporaryDirectory(prefix="raytda-scaling-") as tmp:
        for r in range(a.repeats):
            for name in names:
                out = Path(tmp) / f"{name.replace(' ', '')}-{r}"
                if name == "local":
                    wall, df = run_sweep(out, extra)
                else:
                    wall, df = ray_sweep(int(name.split()[1]), out, extra)
                walls[name].append(wall)
                tables[name].append(df)
                actors[name].add(actors_used(out))
                log(f"repeat {r}: {name}: sweep {wall:.1f} s (load average "
                    f"{os.getloadavg()[0]:.1f} after)")
    cols = ["train_time_s", "serve_time_s"]
    best = {n: pd.concat(t).groupby(level=0)[cols].min() for n, t in tables.items()}
    # The noise floor: how far the in-process run's repeats of the same work lie apart
    # (largest / smallest - 1); a ratio to in-process within it is no distortion.
    spread = pd.concat(tables["local"]).groupby(level=0)[cols].agg(lambda v: v.max() / v.min() - 1)
    ref = best["local"]
    import ray
    import torch

    print(f"raytda cost fidelity: `raytda sweep {a.sweep}`; {platform.node()}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}, ray {ray.__version__}; "
          f"best of {a.repeats}; load average after each run in the log")
    headers = ["configuration", "train local s", "serve local s", "train local spread",
               "serve local spread"]
    for n in names[1:]:
        headers += [f"train {n}/local", f"serve {n}/local"]
    rows, worst = [], {n: 0.0 for n in names[1:]}
    for label in ref.index:
        row = [label, f"{ref.loc[label, 'train_time_s']:.3f}", f"{ref.loc[label, 'serve_time_s']:.3f}",
               *(f"{spread.loc[label, c]:.1%}" if a.repeats > 1 else "-" for c in cols)]
        for n in names[1:]:
            for col in ("train_time_s", "serve_time_s"):
                ratio = best[n].loc[label, col] / ref.loc[label, col]
                worst[n] = max(worst[n], abs(ratio - 1))
                row.append(f"{ratio:.3f}")
        rows.append(row)
    print(table(headers, rows))
    timing = {n: "; ".join(sorted({part for v in t[0]["timing"] for part in v.split("; ")}))
              for n, t in tables.items()}
    measured = {n: ", ".join(sorted(set(t[0]["measured_on"]))) for n, t in tables.items()}
    print()
    print(table(["executor", "actors", "sweep wall s", "local / this", "largest cost deviation",
                 "measured_on", "timing"],
                [[n, "-" if n == "local" else "/".join(map(str, sorted(actors[n]))),
                  f"{min(walls[n]):.1f}", f"{min(walls['local']) / min(walls[n]):.2f}",
                  "-" if n == "local" else f"{worst[n]:.1%} (target <= {TARGET_COST_TOL:.0%})",
                  measured[n], timing[n]] for n in names]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
