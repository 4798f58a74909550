"""Where packing starts to pay: a model's training cost alone against its share of a
stacked pack of k, for several k (what ``plan.packs.SMALLEST_AUTO_PACK`` rests on).

A stacked step has a cost of its own (``vmap``, ``functional_call``, one loss call per
model) that a pack must repay with what it saves (one Python step, one autograd graph,
one optimizer call for all k), so a small pack can be slower than its models trained
one by one. Per round and pack size k, the same k seeds are trained alone (raytda's
``fit``) and then stacked (``train_stacked``), one after the other in one process on one
thread, so both see the same load; rounds use fresh seeds. The cost is CPU seconds of
the training loop (what a job reports as ``train_time_s``; a packed model's is its
share). Default: the built-in ``digits-mlp`` (17k parameters, 1,000 rows, 30 epochs),
the built-in whose steps are the most overhead-bound, so its break-even is the
highest.

    python benchmarks/bench_pack_size.py --sizes 2,3,4,5,10 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from raytda.core.stacked import Member, train_stacked  # noqa: E402
from raytda.core.train import fit, seeded_init  # noqa: E402
from raytda.tasks import get_task  # noqa: E402

from common import table  # noqa: E402


def alone_s(task, x, y, seeds: list[int]) -> float:
    """Mean training-loop cost per model, each trained by itself."""
    total = 0.0
    for seed in seeds:
        seeded_init(seed)
        _, seconds = fit(task.build_model(), task.recipe, (x, y), seed,
                         loss_fn=task.loss, forward=task.forward)
        total += seconds
    return total / len(seeds)


def stacked_s(task, x, y, seeds: list[int]) -> float:
    """Each model's share of one stacked pack's training-loop cost."""
    members = [Member(np.arange(len(x)), seed) for seed in seeds]
    return train_stacked(task.build_model, task.recipe, (x, y), members,
                         loss_fn=task.loss, forward=task.forward).share_s


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--setting", default="digits-mlp", help="a built-in that needs no files")
    p.add_argument("--sizes", default="2,3,4,5,10", help="pack sizes k, comma-separated")
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    task = get_task(a.setting)
    x, y = task.train_data()[:2]
    sizes = [int(k) for k in a.sizes.split(",")]
    print(f"# pack size: {a.setting}, {len(x)} rows, {task.recipe.epochs} epochs; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__}, 1 thread; load average at start "
          f"{os.getloadavg()[0]:.2f}\n")
    rows = []
    for r in range(a.rounds):
        for k in sizes:
            seeds = [10_000 * r + 100 * k + i for i in range(k)]
            one, share = alone_s(task, x, y, seeds), stacked_s(task, x, y, seeds)
            rows.append([r, k, f"{one:.3f}", f"{share:.3f}", f"{one / share:.2f}"])
            print(f"round {r} k={k}: {one / share:.2f}x", file=sys.stderr, flush=True)
    print(table(["round", "k", "alone s/model", "packed s/model", "alone / packed"], rows))
    print(f"\nload average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
