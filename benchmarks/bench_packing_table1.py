"""Table 1's training jobs (experiments/table1_mnist.py: the naive members and the LDS
models of its main and replicate sweeps, MNIST-MLP 5000/500, 100 epochs) run by the
in-process executor with packing off (``train_pack=1``) and at the default (``auto``),
each into a fresh store, alternated; then every trained tensor compared bit for bit
(the LDS models' test margins are what LDS reads, so equal margins mean equal LDS).

    python benchmarks/bench_packing_table1.py --data-dir /work/shared/data/mnist \\
        --work /tmp/packtable1 [--lds-models 100] [--order 1,auto]

``--lds-models`` keeps that many of the 100 LDS models (all 5 members always), to fit a
busy machine's time; the results file says which count ran.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def training_jobs(data_dir: str, store: str, lds_models: int) -> list:
    """The Table 1 sweep's training jobs (members, then LDS models), as its script plans
    them (main sweep and the replicate sweep of its side table)."""
    sys.path.insert(0, str(HERE.parent / "experiments"))
    import table1_mnist

    from raytda.plan.planner import collect

    a = table1_mnist.parse_args(["--data-dir", data_dir, "--store", store, "--device", "cpu"])
    sweeps = [table1_mnist.build(a), table1_mnist.build_truth(a)]
    jobs = {j.key: j for s in sweeps for j in collect(s.spec.evaluations())
            if j.kind in ("model", "ldsmodel")}
    models = [j for j in jobs.values() if j.kind == "model"]
    lds = [j for j in jobs.values() if j.kind == "ldsmodel"][:lds_models]
    return models + lds


def run(jobs: list, store_dir: Path, pack: str) -> dict:
    from raytda.core.args import ComputeArgs
    from raytda.plan.planner import Plan
    from raytda.run.local import InProcessExecutor
    from raytda.store import ArtifactStore

    shutil.rmtree(store_dir, ignore_errors=True)
    store = ArtifactStore(str(store_dir))
    jobs[0].task.data()  # loaded once, before either side is timed
    ex = InProcessExecutor(ComputeArgs(device="cpu", train_pack=1 if pack == "1" else pack),
                           progress=False)
    load = os.getloadavg()
    t0 = time.perf_counter()
    ex.execute(Plan(jobs=list(jobs), evaluations=[], cached=set()), store)
    wall = time.perf_counter() - t0
    metas = [store.meta(j.key) for j in jobs]
    return {"pack": pack, "wall_s": wall, "load_before": load, "load_after": os.getloadavg(),
            "train_time_s_sum": sum(m["train_time_s"] for m in metas),
            "packed_sizes": sorted({m.get("packed", 1) for m in metas})}


def identical(jobs: list, a_dir: Path, b_dir: Path) -> bool:
    import torch

    from raytda.store import ArtifactStore

    a, b = ArtifactStore(str(a_dir)), ArtifactStore(str(b_dir))
    for j in jobs:
        ta, tb = a.get(j.key)[0], b.get(j.key)[0]
        if ta.keys() != tb.keys() or not all(torch.equal(ta[k], tb[k]) for k in ta):
            print(f"differs: {j.describe()}")
            return False
    return True


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--work", default="/tmp/raytda-packtable1")
    p.add_argument("--lds-models", type=int, default=100)
    p.add_argument("--order", default="1,auto", help="train_pack values, in run order")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    work = Path(a.work)
    jobs = training_jobs(a.data_dir, str(work / "plan-store"), a.lds_models)
    print(f"{sum(j.kind == 'model' for j in jobs)} members + "
          f"{sum(j.kind == 'ldsmodel' for j in jobs)} LDS models", flush=True)
    runs = []
    for i, pack in enumerate(a.order.split(",")):
        r = run(jobs, work / f"{pack}-{i}", pack)
        r["store"] = str(work / f"{pack}-{i}")
        runs.append(r)
        print(f"train_pack={pack}: {r['wall_s']:.1f} s wall, summed train_time_s "
              f"{r['train_time_s_sum']:.1f}, pack sizes {r['packed_sizes']}, load "
              f"{r['load_before'][0]:.2f} -> {r['load_after'][0]:.2f}", flush=True)
        if a.json:
            Path(a.json).write_text(json.dumps({"machine": platform.node(),
                                                "cpus": os.cpu_count(), "runs": runs},
                                               indent=1))
    same = all(identical(jobs, Path(runs[0]["store"]), Path(r["store"])) for r in runs[1:])
    print(f"every trained tensor identical across runs: {same}")


if __name__ == "__main__":
    main()
