"""Attributing new inputs with an Attributor vs recomputing the members from scratch.

One command::

    python benchmarks/bench_attributor.py --data-dir ../shared/data/mnist

MNIST-MLP (the built-in 'mnist-mlp' task, full recipe unless --epochs), TRAK k=2048,
5000 train samples. A sweep (no LDS) builds naive I=1 and Dropout I=1 D=10 in a temporary
store; then, per configuration and in this one process:

- the Attributor's construction time (load networks, masks, train sides, Q; generate the
  projections that fit its memory budget), and the memory it holds (``resident_bytes``,
  and the process RSS delta over construction and the first call);
- its warm latency (best of --repeats) for one new input and for a batch of --batch new
  inputs (MNIST test images beyond the task's test set);
- the time of recomputing the configuration's members for a new test set: the
  MemberBlock and QValues jobs of its members run again in a throwaway store that holds
  only the trained models (what a new test set costs when train sides are not stored);
- the ratios recompute / attributor.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from raytda import Sweep
from raytda.attributor import DEFAULT_MEMORY_BYTES, Attributor
from raytda.core.args import ComputeArgs
from raytda.ensembles import Ensemble, parse_ensemble
from raytda.methods import Method
from raytda.store import ArtifactStore
from raytda.tasks import get_task

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), sep, *(line(r) for r in cells[1:])])


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc), 0 where unavailable."""
    try:
        with open("/proc/self/status") as f:
            for ln in f:
                if ln.startswith("VmRSS:"):
                    return int(ln.split()[1]) * 1024
    except OSError:
        pass
    return 0


def best_time(fn, repeats: int, *args) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best


def recompute_seconds(sweep: Sweep, ens: Ensemble, args: ComputeArgs) -> float:
    """Time of the configuration's MemberBlock + QValues jobs run again from the models."""
    ev = sweep.evaluation(ens)
    tmp = tempfile.mkdtemp(prefix="raytda-recompute-")
    try:
        throwaway = ArtifactStore(tmp)
        for model in ev.models():  # only the trained models travel
            tensors, meta = sweep.store.get(model.key)
            throwaway.put(model.key, tensors, meta, sweep.store.record(model.key)["spec"])
        total = 0.0
        for job in (*ev.blocks(), *ev.qvalues()):
            t0 = time.perf_counter()
            job.run(throwaway, args)
            total += time.perf_counter() - t0
        return total
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=os.environ.get("RAYTDA_MNIST", str(DEFAULT_DATA)))
    ap.add_argument("--n-train", type=int, default=5000)
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=None,
                    help="training epochs (default: the mnist-mlp recipe's)")
    ap.add_argument("--proj-dim", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=100, help="size of the batch of new inputs")
    ap.add_argument("--repeats", type=int, default=3, help="warm calls per latency (best of)")
    ap.add_argument("--memory-bytes", type=int, default=DEFAULT_MEMORY_BYTES,
                    help="the Attributor's budget for resident projection matrices")
    ap.add_argument("--ensembles", nargs="+", default=["naive:I=1", "dropout:I=1,D=10"],
                    metavar="SPEC", help="configurations, e.g. naive:I=1 dropout:I=1,D=10")
    ap.add_argument("--store", default=None, help="keep the sweep's store here (default: temp)")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not Path(args.data_dir).is_dir():
        print(f"SKIP: MNIST directory {args.data_dir} not found; pass --data-dir")
        return 0
    over = {"n_train": args.n_train, "n_test": args.n_test}
    if args.epochs is not None:
        over["epochs"] = args.epochs
    task = get_task("mnist-mlp", data_dir=args.data_dir, **over)
    # New inputs: MNIST test images that are not in the task's test set.
    bigger = get_task("mnist-mlp", data_dir=args.data_dir, **{**over, "n_test": args.n_test + args.batch})
    _, (xt, yt) = bigger.load()
    x_new, y_new = xt[args.n_test:], yt[args.n_test:]

    ensembles = [parse_ensemble(e) for e in args.ensembles]
    compute = ComputeArgs()
    store_dir = args.store or tempfile.mkdtemp(prefix="raytda-bench-attributor-")
    print(f"# raytda Attributor benchmark ({time.strftime('%Y-%m-%d %H:%M')}, torch "
          f"{torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.1f} at start)")
    try:
        sweep = Sweep(task, Method("trak", proj_dim=args.proj_dim), ensembles, lds=None,
                      store=store_dir, compute=compute, progress=False)
        log("sweep: training the model and serving the members")
        t0 = time.perf_counter()
        sweep.run()
        sweep_s = time.perf_counter() - t0
        rows = []
        for ens in ensembles:
            log(f"{ens.label}: Attributor")
            gc.collect()
            rss0 = rss_bytes()
            t0 = time.perf_counter()
            attr = Attributor.from_sweep(sweep, ens, memory_bytes=args.memory_bytes)
            build_s = time.perf_counter() - t0
            attr.scores(x_new[:1], y_new[:1])  # first call: anything lazy happens here
            rss_delta = rss_bytes() - rss0
            one_s = best_time(attr.scores, args.repeats, x_new[:1], y_new[:1])
            batch_s = best_time(attr.scores, args.repeats, x_new, y_new)
            resident = attr.resident_bytes
            held, members = attr.resident_members, attr.n_members
            del attr
            gc.collect()
            log(f"{ens.label}: recomputing the members from the models")
            re_s = recompute_seconds(sweep, ens, compute)
            rows.append([ens.label, members, f"{held}/{members}", f"{build_s:.2f}",
                         f"{one_s:.3f}", f"{batch_s:.3f}", f"{re_s:.1f}",
                         f"{re_s / one_s:.0f}x", f"{re_s / batch_s:.0f}x",
                         f"{resident / 2**20:.0f}", f"{rss_delta / 2**20:.0f}"])
    finally:
        if args.store is None:
            shutil.rmtree(store_dir, ignore_errors=True)

    print(f"\n#### Attributor vs recomputing members, MNIST-MLP, TRAK k={args.proj_dim}, "
          f"{args.n_train} train, {task.recipe.epochs} epochs, new inputs: 1 and "
          f"{len(x_new)}, CPU, projection budget {args.memory_bytes / 2**30:.1f} GiB\n")
    print(table(["ensemble", "members", "P resident", "construct s", "1 input s",
                 f"{len(x_new)} inputs s", "recompute s", "ratio 1", f"ratio {len(x_new)}",
                 "resident MiB", "RSS delta MiB"], rows))
    print(f"\nsweep (train + serve both configurations): {sweep_s:.1f} s; attributor times are "
          f"warm (best of {args.repeats}); recompute = the members' MemberBlock + QValues "
          f"jobs run again from the stored models; ratio = recompute / attributor")
    print(f"(load average {os.getloadavg()[0]:.1f} at end)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
