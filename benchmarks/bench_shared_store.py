"""Two sweep processes on one store against one process on the same sweep.

Runs the same `raytda sweep` (in-process executor) on a fresh store, first as one process,
then as two processes started together on one store, ``--repeats`` times, interleaved so
both modes see the same background load. Prints, per run: its wall time (start of the
first process to the end of the last), the CPU time its processes used, how many
artifacts each process wrote (from each artifact record's ``pid``), and whether the pair's
results tables equal each other and the single run's.

Each process computes with one torch thread (the in-process executor runs every job on
its one-CPU reservation; ``OMP_NUM_THREADS=1`` and ``MKL_NUM_THREADS=1`` keep planning
and result collection on one thread too). Each process starts in a session of its own, as
a sweep started from its own terminal does (on a kernel with autogroup scheduling,
processes of one session share one CPU share: started from one session, a pair gets the
CPU time of one process on a busy machine).

    python benchmarks/bench_shared_store.py --repeats 2
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pandas as pd

from raytda.store import ArtifactStore

from common import log, table

REPO = Path(__file__).resolve().parents[1]


def sweep_args(a: argparse.Namespace, store: Path, out: Path) -> list[str]:
    args = ["sweep", "--setting", a.setting, "--lds-m", str(a.lds_m), "--proj-dim",
            str(a.proj_dim), "--store", str(store), "--out", str(out), "--executor", "local",
            "--quiet", "--device", "cpu"]
    for e in a.ensemble:
        args += ["--ensemble", e]
    return args


def cpu_of_children() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run(a: argparse.Namespace, root: Path, processes: int, env: dict[str, str]) -> dict:
    """One sweep on a fresh store by ``processes`` processes started together."""
    store = root / "store"
    cpu0, t0 = cpu_of_children(), time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "raytda.cli",
                               *sweep_args(a, store, root / f"out{i}")], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              # A session each, as from two terminals: with the kernel's
                              # autogroup scheduling, processes of one session share one
                              # CPU share, so a pair there gets no more CPU than one.
                              start_new_session=True)
             for i in range(processes)]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"a sweep process failed:\n{err}")
    wall, cpu = time.perf_counter() - t0, cpu_of_children() - cpu0
    st = ArtifactStore(str(store))
    metas = [st.meta(k) for k in st.keys()]
    by_pid = Counter(m.get("pid") for m in metas)
    tables = [pd.read_parquet(root / f"out{i}" / "results.parquet") for i in range(processes)]
    return {"wall": wall, "cpu": cpu, "made": [by_pid[p.pid] for p in procs],
            "artifacts": len(metas), "tables": tables}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--setting", default="digits-mlp")
    ap.add_argument("--ensemble", action="append", default=None,
                    help="as raytda sweep's (default: naive:I=1|2, dropout:I=1|2,D=3)")
    ap.add_argument("--lds-m", type=int, default=8)
    ap.add_argument("--proj-dim", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    a.ensemble = a.ensemble or ["naive:I=1|2", "dropout:I=1|2,D=3"]
    with tempfile.TemporaryDirectory(prefix="bench-shared-store-") as tmp:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        rows, load = [], [os.getloadavg()[0]]
        for r in range(a.repeats):
            for n in (1, 2):
                log(f"repeat {r + 1}: {n} process(es)")
                got = run(a, Path(tmp) / f"r{r}-n{n}", n, env)
                rows.append((r, n, got))
                load.append(os.getloadavg()[0])
        singles = {r: g for r, n, g in rows if n == 1}
        out = []
        for r, n, g in rows:
            lds = [t.set_index("label")["lds"] for t in g["tables"]]
            same = all(t.equals(g["tables"][0]) for t in g["tables"]) \
                and all(x.equals(singles[r]["tables"][0].set_index("label")["lds"])
                        for x in lds)
            name = "one process" if n == 1 else "two processes, one store"
            out.append([r + 1, name,
                        f"{g['wall']:.1f}", f"{singles[r]['wall'] / g['wall']:.2f}",
                        f"{g['cpu']:.1f}", " + ".join(str(m) for m in g["made"]),
                        g["artifacts"], "yes" if same else "NO"])
    print(f"{a.setting}, ensembles {', '.join(a.ensemble)}, LDS m = {a.lds_m}, "
          f"proj_dim = {a.proj_dim}; {os.cpu_count()} CPUs; 1-minute load average "
          f"{', '.join(f'{x:.1f}' for x in load)} (before, then after each run)")
    print(table(["repeat", "run", "wall s", "speed-up", "CPU s", "artifacts by process",
                 "artifacts", "same results"], out))


if __name__ == "__main__":
    main()
