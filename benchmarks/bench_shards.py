"""A member's train side built whole vs in row shards, side by side, in one process.

One command::

    python benchmarks/bench_shards.py

The built-in 'digits-mlp' task (1000 train / 200 test, sklearn's bundled digits: no
files), TRAK at --proj-dim, naive I=1 and Dropout I=1 D=--D, no LDS. The models and Q are
trained once in a temporary store; then the members' feature jobs and evaluations run
whole (default budget) and in shards of a quarter of the train rows (given as
``train_shard_rows``, or from a budget whose payload share is half a member's train
features), each from an empty feature side, in alternation for --repeats rounds. Per
configuration and path: the serving cost (``serve_time_s``: for sharded members the sum
of all shard jobs and the reduction, the work, which the Ray executor may spread over
actors), the largest number of train-feature rows any job held, the jobs run, and the
scores' largest relative difference to the whole path.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import torch

from raytda import Sweep
from raytda.core.args import ComputeArgs
from raytda.ensembles import Ensemble
from raytda.methods import Method
from raytda.plan.shards import ShardedMemberBlock
from raytda.tasks import get_task


def drop_feature_side(store) -> None:
    """Remove member payloads, shards and results: the next run makes them again."""
    for kind in ("block", "shard", "result", "scores"):
        for key in store.keys(kind):
            store.delete(key)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--proj-dim", type=int, default=256)
    ap.add_argument("--D", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(1)
    task = get_task("digits-mlp")
    method = Method("trak", proj_dim=a.proj_dim)
    ensembles = [Ensemble("naive", 1), Ensemble("dropout", 1, a.D)]
    n_train = task.data().n_train
    member_bytes = n_train * a.proj_dim * 4
    # "rows": shards of a quarter of the train rows, the default budget otherwise (so the
    # projection is held and cached as in "whole"); "budget": the same shards, from a
    # budget whose payload share is half a member's train side; every other cache of
    # the process shrinks with it (projections streamed, not kept; small score chunks).
    paths = {"whole": ComputeArgs(),
             "rows": ComputeArgs(train_shard_rows=-(-n_train // 4)),
             "budget": ComputeArgs(memory_budget_bytes=member_bytes)}
    root = Path(tempfile.mkdtemp(prefix="bench-shards-"))
    try:
        rows: dict[tuple[str, str], list[dict]] = {}
        ref: dict[str, torch.Tensor] = {}
        for _ in range(a.repeats):
            for path, compute in paths.items():
                sweep = Sweep(task, method, ensembles, lds=None, store=str(root),
                              progress=False, compute=compute)
                drop_feature_side(sweep.store)
                table = sweep.run()
                for ens in ensembles:
                    ev = sweep.evaluation(ens)
                    scores = sweep.scores(ens)
                    ref.setdefault(ens.label, scores)
                    metas = [sweep.store.meta(b.key) for b in ev.needs.features]
                    held = max(m.get("held_rows", n_train) for m in metas)
                    row = table[table["label"] == ens.label].iloc[0]
                    diff = float((scores - ref[ens.label]).abs().max()
                                 / ref[ens.label].abs().max())
                    rows.setdefault((ens.label, path), []).append(
                        {"serve": float(row["serve_time_s"]), "held": held, "diff": diff,
                         "jobs": sum(1 + len(b.shards()) if isinstance(b, ShardedMemberBlock)
                                     else 1 for b in ev.needs.features)})
        print(f"digits-mlp, TRAK k={a.proj_dim}, n_train={n_train}; serve_time_s: best of "
              f"{a.repeats}; one process, 1 torch thread")
        print(f"{'configuration':<18} {'path':<8} {'jobs':>5} {'rows held':>10} "
              f"{'serve s':>8} {'ratio':>6} {'max rel diff':>13}")
        for ens in ensembles:
            whole = min(r["serve"] for r in rows[(ens.label, "whole")])
            for path in paths:
                rs = rows[(ens.label, path)]
                best = min(r["serve"] for r in rs)
                print(f"{ens.label:<18} {path:<8} {rs[0]['jobs']:>5} {rs[0]['held']:>10} "
                      f"{best:>8.3f} {best / whole:>6.2f} {max(r['diff'] for r in rs):>13.2e}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
