"""LDS models of MNIST-MLP trained one by one against the same models trained stacked.

The paper's recipe (:class:`raytda.tasks.mlp.MNISTMLPTask`: 784-128-64-10, dropout 0.1,
SGD lr 0.01 momentum 0.9, batch 64, 100 epochs, checkpoints kept as the task keeps them)
on m LDS subsets of alpha * n_train rows (default 50 subsets of 2,500 of 5,000), with the
seeds an ``LDSModel`` job uses. One run, in one process, on one thread (raytda's
``train_threads`` default):

- one by one: each model as ``lds_model`` trains it (``seeded_init`` then ``fit``);
- stacked: the same models in packs (``raytda.core.stacked.train_stacked``), the pack size
  chosen from ``--budget-mb`` by ``models_per_pack`` unless ``--pack`` is given.

The two sides are interleaved pack by pack, A-B-A (half a pack's models alone, the pack
stacked, the other half alone), so both see the same background load on average; the
speed-up is the ratio of the sums. Reported: the training loops' wall time (what the
jobs report as ``train_time_s``), the whole wall time (inits and snapshots included), the
peak resident memory above the start (``raytda.core.costs.measure``), and how far the
stacked models are from the alone ones (weights, test margins, and whether each test
sample ranks the m retrained models the same way, which is what the LDS reads).

    python benchmarks/bench_training.py --data-dir /work/shared/data/mnist --out R.md
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))

from raytda.core.costs import measure  # noqa: E402
from raytda.core.lds import lds_subsets  # noqa: E402
from raytda.core.outputs import margin  # noqa: E402
from raytda.core.stacked import Member, bytes_per_model, models_per_pack, train_stacked  # noqa: E402
from raytda.core.train import fit, load_state, seeded_init  # noqa: E402
from raytda.specs import LDSSpec, derive_seed  # noqa: E402

from common import DEFAULT_DATA, load_mnist_task, log, table  # noqa: E402


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=str(DEFAULT_DATA))
    p.add_argument("--n-train", type=int, default=5000)
    p.add_argument("--n-test", type=int, default=500)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--models", type=int, default=50, help="LDS subsets m")
    p.add_argument("--alpha", type=float, default=0.5, help="subset fraction")
    p.add_argument("--budget-mb", type=float, default=1024.0)
    p.add_argument("--pack", type=int, default=None, help="models per pack (default: budget)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="write the markdown report here")
    return p.parse_args()


def machine() -> str:
    cpu = "?"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {platform.python_version()}"


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    loaded = load_mnist_task(args)
    if loaded is None:
        return
    task, data = loaded
    recipe = task.recipe
    x, y, xt, yt = data.x_train, data.y_train, data.x_test, data.y_test
    spec = LDSSpec(m=args.models, alpha=args.alpha, seed=0)
    subsets = lds_subsets(len(y), spec)
    # The seed an LDSModel job trains with (replicate 0).
    members = [Member(np.flatnonzero(s), derive_seed("lds-model", spec.seed, j, 0))
               for j, s in enumerate(subsets)]
    per_model = bytes_per_model(task.build_model(), recipe, x[:1], y_example=y[:1])
    pack = args.pack or models_per_pack(per_model, int(args.budget_mb * 2**20), len(members))
    load0 = os.getloadavg()
    log(f"{len(members)} models of {len(members[0].rows)} rows, {recipe.epochs} epochs, "
        f"pack {pack} ({per_model / 2**20:.1f} MiB a model), load {load0}")

    # Untimed: both paths once on a tiny run, so library start-up is billed to neither.
    tiny = type(recipe)(**{**recipe.to_dict(), "epochs": 1, "checkpoint_epochs": ()})
    fit(task.build_model(), tiny, (x[:64], y[:64]), 0)
    train_stacked(task.build_model, tiny, (x, y), [Member(np.arange(64), 0)] * 2)

    alone_states: list = [None] * len(members)
    stacked_states: list = []
    t = {"alone_loop": 0.0, "alone_wall": 0.0, "stacked_loop": 0.0, "stacked_wall": 0.0}
    peaks = {"alone": 0, "stacked": 0}
    loads = [load0[0]]

    def alone(j: int) -> None:
        mb = members[j]
        t0 = time.perf_counter()
        with measure() as mem:
            seeded_init(mb.seed)
            model = task.build_model()
            states, seconds = fit(model, recipe, (x[mb.rows], y[mb.rows]), mb.seed)
        t["alone_wall"] += time.perf_counter() - t0
        t["alone_loop"] += seconds
        peaks["alone"] = max(peaks["alone"], mem.peak_bytes)
        alone_states[j] = states[recipe.epochs]

    for start in range(0, len(members), pack):
        chunk = members[start:start + pack]
        # A-B-A: half the pack's models alone, the pack stacked, the other half alone, so
        # that both sides see the same (shifting) background load on average.
        half = start + (len(chunk) + 1) // 2
        for j in range(start, half):
            alone(j)
        loads.append(os.getloadavg()[0])
        log(f"models {start}..{half - 1} alone: {t['alone_loop']:.1f} s so far")
        t0 = time.perf_counter()
        with measure() as mem:
            result = train_stacked(task.build_model, recipe, (x, y), chunk)
        t["stacked_wall"] += time.perf_counter() - t0
        t["stacked_loop"] += result.train_time_s
        peaks["stacked"] = max(peaks["stacked"], mem.peak_bytes)
        stacked_states += [st[recipe.epochs] for st in result.states]
        loads.append(os.getloadavg()[0])
        log(f"models {start}..{start + len(chunk) - 1} stacked: {t['stacked_loop']:.1f} s so far")
        for j in range(half, start + len(chunk)):
            alone(j)
        loads.append(os.getloadavg()[0])
        log(f"models {half}..{start + len(chunk) - 1} alone: {t['alone_loop']:.1f} s so far")
    load1 = os.getloadavg()

    def margins(state):
        with torch.no_grad():
            return margin(load_state(task.build_model(), state)(xt), yt).numpy()

    w = max(float((a[k] - b[k]).abs().max()) for a, b in zip(alone_states, stacked_states)
            for k in a)
    fa = np.stack([margins(s) for s in alone_states])  # (m, n_test): the LDS truth
    fs = np.stack([margins(s) for s in stacked_states])
    rho = np.array([spearmanr(fa[:, i], fs[:, i])[0] for i in range(fa.shape[1])])
    same = float(np.mean([(np.argsort(fa[:, i]) == np.argsort(fs[:, i])).all()
                          for i in range(fa.shape[1])]))

    n = len(members)
    rows = [["one by one", f"{t['alone_loop']:.1f}", f"{t['alone_loop'] / n:.2f}",
             f"{t['alone_wall']:.1f}", f"{peaks['alone'] / 2**20:.0f}", "1.00x"],
            [f"stacked ({pack} a pack)", f"{t['stacked_loop']:.1f}",
             f"{t['stacked_loop'] / n:.2f}", f"{t['stacked_wall']:.1f}",
             f"{peaks['stacked'] / 2**20:.0f}",
             f"{t['alone_loop'] / t['stacked_loop']:.2f}x "
             f"(wall {t['alone_wall'] / t['stacked_wall']:.2f}x)"]]
    report = "\n".join([
        f"# Training {n} MNIST-MLP LDS models: one by one vs stacked",
        "",
        f"Command: `{' '.join(['python', *sys.argv])}`",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"Machine: {machine()}; torch threads {args.threads}",
        f"Load average (1, 5, 15 min) at start {tuple(round(v, 1) for v in load0)}, "
        f"at end {tuple(round(v, 1) for v in load1)}; 1-min load between the phases "
        f"{', '.join(f'{v:.1f}' for v in loads[1:])} (shared machine: other engineers' "
        f"jobs ran throughout)",
        f"Setting: {len(y)} train / {len(yt)} test, {n} subsets of {len(members[0].rows)} rows, "
        f"recipe {recipe}",
        "",
        table(["path", "train loops (s)", "s / model", "wall (s)", "peak RSS (MiB)",
               "speed-up"], rows),
        "",
        "Train loops: the sum of what the jobs report as `train_time_s` (a packed model "
        "reports its share, loop / pack size). Wall: everything, inits and snapshots too. "
        "Peak RSS: the largest peak above the start of one alone model, or of one pack.",
        "",
        f"Stacked vs alone: max |weight difference| {w:.2e}; max |test margin difference| "
        f"{np.abs(fa - fs).max():.2e} (margins up to {np.abs(fa).max():.1f}); per test sample, "
        f"Spearman of the {n} retrained margins stacked vs alone: min {np.nanmin(rho):.6f}; "
        f"test samples ranking the {n} models identically: {same:.1%}.",
    ])
    print(report)
    if args.out:
        Path(args.out).write_text(report + "\n")


if __name__ == "__main__":
    main()
