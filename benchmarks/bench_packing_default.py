"""The default sweep with packing off (``--train-pack 1``) and at the default
(``--train-pack auto``), alternated, each into a fresh store: wall time, the training jobs'
summed cost, and every configuration's LDS (equal by construction: stacked training is
bit-identical to training alone).

    python benchmarks/bench_packing_default.py --rounds 2 --work /tmp/packbench \\
        -- --setting digits-mlp

Arguments after ``--`` go to ``raytda sweep`` as they are (the default: the README's
``--setting digits-mlp``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path


def one_sweep(pack: str, out: Path, sweep_args: list[str]) -> dict:
    """Run ``raytda sweep`` into a fresh ``out``; its wall time and results."""
    import pandas as pd

    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "raytda.cli", "sweep", *sweep_args, "--out", str(out),
           "--train-pack", pack, "--quiet"]
    load = os.getloadavg()
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    df = pd.read_parquet(out / "results.parquet")
    return {"pack": pack, "wall_s": wall, "load_before": load, "load_after": os.getloadavg(),
            "lds": {f"{r.method} {r.label}": float(r.lds) for r in df.itertuples()},
            "train_time_s": {f"{r.method} {r.label}": float(r.train_time_s)
                             for r in df.itertuples()}}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    sweep_args = argv[argv.index("--") + 1:] if "--" in argv else ["--setting", "digits-mlp"]
    own = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=2, help="off/on pairs, alternated")
    p.add_argument("--work", default="/tmp/raytda-packbench", help="where the stores go")
    p.add_argument("--json", default=None, help="write every run here")
    a = p.parse_args(own)
    runs = []
    for r in range(a.rounds):
        for pack in ("1", "auto"):
            run = one_sweep(pack, Path(a.work) / f"{pack}-{r}", sweep_args)
            runs.append(run)
            print(f"round {r} train_pack={pack}: {run['wall_s']:.1f} s wall, load "
                  f"{run['load_before'][0]:.2f} -> {run['load_after'][0]:.2f}", flush=True)
            if a.json:
                Path(a.json).write_text(json.dumps({"machine": platform.node(),
                                                    "cpus": os.cpu_count(),
                                                    "sweep_args": sweep_args, "runs": runs},
                                                   indent=1))
    base = runs[0]["lds"]
    same = all(run["lds"] == base for run in runs)
    print(f"LDS identical across all {len(runs)} runs: {same}")
    for pack in ("1", "auto"):
        walls = [run["wall_s"] for run in runs if run["pack"] == pack]
        print(f"train_pack={pack}: wall " + ", ".join(f"{w:.1f}" for w in walls) + " s")


if __name__ == "__main__":
    main()
