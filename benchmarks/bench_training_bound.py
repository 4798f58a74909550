"""How fast stacked training could be: an alone model's training against its GEMMs alone.

Stacked training (``raytda.core.stacked``) keeps every model's own GEMMs, in the same
order, so that each model is bit-identical to the one trained alone; what it removes is
the per-step work around them (Python, autograd's graph, optimizer calls, the data
gather). Its speed-up over training one by one is therefore at most

    (an alone model's training loop) / (that loop's GEMMs, run by themselves)

and this script measures both sides of that ratio on one thread, in one process,
alternating A-B-A so both see the same background load:

- ``alone``: raytda's ``fit`` on one LDS subset of MNIST-MLP with the paper's recipe
  (784-128-64-10, dropout 0.1, SGD, batch 64), the CPU seconds it reports;
- ``its GEMMs``: the same number of steps of only that model's matrix products (the
  forward ``addmm`` of each layer, the backward's weight-gradient and input-gradient
  products), on tensors of the same shapes that stay in cache as the model's do;
- ``M models' GEMMs batched``: the same products for a pack of M models as one
  ``baddbmm`` / ``bmm`` per product (what ``raytda.core.stacked_linear`` runs), per model;
- ``stacked``: ``train_stacked`` on the M models, its loop's CPU seconds per model.

    python benchmarks/bench_training_bound.py --data-dir ../shared/data/mnist --epochs 4
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from raytda.core.lds import lds_subsets  # noqa: E402
from raytda.core.stacked import Member, train_stacked  # noqa: E402
from raytda.core.train import fit, seeded_init  # noqa: E402
from raytda.specs import LDSSpec, derive_seed  # noqa: E402

from common import DEFAULT_DATA, load_mnist_task, log, table  # noqa: E402


def gemm_steps(dims: list[int], batch: int, steps: int, models: int) -> float:
    """CPU seconds of ``steps`` training steps' matrix products for ``models`` MLPs of
    layer widths ``dims`` (one model: ``addmm`` / ``mm``; several: ``baddbmm`` / ``bmm``)."""
    m = models
    pairs = list(zip(dims[:-1], dims[1:]))
    xs = [torch.randn(m, batch, a) for a, _ in pairs]       # each layer's input
    ws = [torch.randn(m, b, a) * 0.05 for a, b in pairs]    # (out, in), as nn.Linear
    bs = [torch.randn(m, 1, b) for _, b in pairs]
    gs = [torch.randn(m, batch, b) for _, b in pairs]       # each layer's output gradient
    one = m == 1
    t0 = time.process_time()
    for _ in range(steps):
        for x, w, b in zip(xs, ws, bs):                     # forward
            if one:
                torch.addmm(b[0, 0], x[0], w[0].t())
            else:
                torch.baddbmm(b, x, w.transpose(1, 2))
        for i in reversed(range(len(pairs))):               # backward
            g, x, w = gs[i], xs[i], ws[i]
            if one:
                g[0].t().mm(x[0])                            # dW (out, in)
                if i:
                    g[0].mm(w[0])                            # dx (batch, in)
            else:
                torch.bmm(g.transpose(1, 2), x)
                if i:
                    torch.bmm(g, w)
    return (time.process_time() - t0) / m


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=str(DEFAULT_DATA))
    p.add_argument("--n-train", type=int, default=5000)
    p.add_argument("--n-test", type=int, default=500)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--models", type=int, default=50, help="pack size M")
    p.add_argument("--alone", type=int, default=4, help="models timed alone (half before, "
                   "half after the others)")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    torch.set_num_threads(1)
    loaded = load_mnist_task(a)
    if loaded is None:
        return
    task, data = loaded
    recipe = task.recipe
    x, y = data.x_train, data.y_train
    spec = LDSSpec(m=a.models, alpha=0.5, seed=0)
    # the seeds an LDSModel job trains with (replicate 0), as bench_training.py
    members = [Member(np.flatnonzero(s), derive_seed("lds-model", spec.seed, j, 0))
               for j, s in enumerate(lds_subsets(len(y), spec))]
    rows = len(members[0].rows)
    steps = a.epochs * -(-rows // recipe.batch_size)
    dims = [task.IN_DIM, *task.settings["hidden"], task.N_CLASSES]
    # warm-up: one short fit and one pass of each GEMM path
    tiny = type(recipe)(**{**recipe.to_dict(), "epochs": 1, "checkpoint_epochs": ()})
    fit(task.build_model(), tiny, (x[:256], y[:256]), 0)
    train_stacked(task.build_model, tiny, (x, y), [Member(np.arange(64), 0)] * 2)
    gemm_steps(dims, recipe.batch_size, 20, 1)
    gemm_steps(dims, recipe.batch_size, 5, a.models)
    load0 = os.getloadavg()

    def alone(j: int) -> float:
        mb = members[j]
        seeded_init(mb.seed)
        _, seconds = fit(task.build_model(), recipe, (x[mb.rows], y[mb.rows]), mb.seed)
        return seconds

    half = a.alone // 2
    t_alone = [alone(j) for j in range(half)]
    t_gemm = [gemm_steps(dims, recipe.batch_size, steps, 1)]
    t_batched = [gemm_steps(dims, recipe.batch_size, steps, a.models)]
    log(f"stacked: {a.models} models, {a.epochs} epochs")
    stacked = train_stacked(task.build_model, recipe, (x, y), members)
    t_stacked = stacked.share_s
    t_batched.append(gemm_steps(dims, recipe.batch_size, steps, a.models))
    t_gemm.append(gemm_steps(dims, recipe.batch_size, steps, 1))
    t_alone += [alone(j) for j in range(half, a.alone)]
    load1 = os.getloadavg()

    mean = lambda v: float(np.mean(v))  # noqa: E731
    al, gm, bt = mean(t_alone), mean(t_gemm), mean(t_batched)
    rows_out = [
        ["alone (fit)", f"{al:.3f}", "1.00x", ", ".join(f"{t:.3f}" for t in t_alone)],
        ["stacked (train_stacked)", f"{t_stacked:.3f}", f"{al / t_stacked:.2f}x", "one pack"],
        ["its GEMMs by themselves", f"{gm:.3f}", f"{al / gm:.2f}x (bound)",
         ", ".join(f"{t:.3f}" for t in t_gemm)],
        [f"{a.models} models' GEMMs batched, per model", f"{bt:.3f}", f"{al / bt:.2f}x (bound)",
         ", ".join(f"{t:.3f}" for t in t_batched)],
    ]
    report = [
        "# Stacked training's bound: an alone model's training against its GEMMs",
        "",
        f"Command: `python benchmarks/bench_training_bound.py {' '.join(sys.argv[1:])}`",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, 1 thread",
        f"Load average at start {tuple(round(v, 1) for v in load0)}, at end "
        f"{tuple(round(v, 1) for v in load1)}",
        f"Setting: MNIST-MLP {dims}, {rows} rows a model, batch {recipe.batch_size}, "
        f"{a.epochs} epochs ({steps} steps)",
        "",
        table(["path", "CPU s per model", "alone / this", "runs"], rows_out),
        "",
        "A bound row's ratio is the most stacking could gain if everything but the GEMMs "
        "took no time.",
    ]
    text = "\n".join(report)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
