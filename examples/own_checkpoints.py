"""Attribution over models you already trained: your checkpoints, your ground truth.

raytda trains nothing here. The script first plays the part of your own training code:
plain PyTorch trains two small MLPs on scikit-learn's 8x8 digits (embedded, no files)
and saves three checkpoints of each with ``safetensors.torch.save_file``. A Task whose
``checkpoints()`` returns those files (2 runs x 3 checkpoints, oldest first) and whose
``recipe`` is None then hands them to a Sweep:

- ``naive:I=2`` (the two final models), ``checkpoints:I=2,C=3`` (all six checkpoints) and
  ``dropout:I=2,D=4`` (4 fixed dropout masks per final model), with ``lds=None``:
  attribution only, no retraining; then ``sweep.scores(...)`` and the top proponents of
  test sample 0;
- the same configurations against ground truth you computed yourself: a few models
  retrained by the script on random halves, their f (the classification margin, the
  Task's output) on the test set, given as ``GroundTruth(subsets, outputs)``. raytda
  reports LDS without training a model of its own.

::

    python examples/own_checkpoints.py --out runs/own
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from raytda import GroundTruth, Sweep, Task

ENSEMBLES = ("naive:I=2", "checkpoints:I=2,C=3", "dropout:I=2,D=4")
N_CHECKPOINTS = 3


def digits(n_train: int, n_test: int, seed: int = 0
           ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Disjoint train and test samples of scikit-learn's digits, pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    if n_train + n_test > len(x):
        raise ValueError(f"digits has {len(x)} samples, asked for {n_train} + {n_test}")
    order = np.random.default_rng(seed).permutation(len(x))
    xt = torch.tensor(x[order] / 16.0, dtype=torch.float32)
    yt = torch.tensor(y[order], dtype=torch.long)
    return ((xt[:n_train], yt[:n_train]),
            (xt[n_train:n_train + n_test], yt[n_train:n_train + n_test]))


def make_model() -> nn.Module:
    """Your model: an MLP with one dropout layer (raytda's dropout site)."""
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 10))


def train_plain(x: torch.Tensor, y: torch.Tensor, seed: int, epochs: int,
                save: dict[int, Path] | None = None) -> nn.Module:
    """Ordinary PyTorch training (Adam, mini-batches of 32); writes the weights after each
    epoch in ``save`` as a safetensors file. Returns the final model in eval mode."""
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(1, epochs + 1):
        model.train()
        for rows in torch.randperm(len(x), generator=gen).split(32):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[rows]), y[rows]).backward()
            opt.step()
        if save and epoch in save:
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(save[epoch]))
    return model.eval()


def train_runs(ckpt_dir: Path, x: torch.Tensor, y: torch.Tensor, runs: int, epochs: int
               ) -> list[list[Path]]:
    """``runs`` training runs, each keeping ``N_CHECKPOINTS`` evenly spaced epochs."""
    keep = [round(epochs * (k + 1) / N_CHECKPOINTS) for k in range(N_CHECKPOINTS)]
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for run in range(runs):
        save = {e: ckpt_dir / f"run{run}_epoch{e}.safetensors" for e in keep}
        train_plain(x, y, seed=run, epochs=epochs, save=save)
        out.append([save[e] for e in keep])
    return out


class OwnCheckpoints(Task):
    """Your trained models as a Task: raytda reads them, trains none (``recipe = None``)."""

    name = "digits-own-checkpoints"
    version = "1"
    recipe = None

    def __init__(self, runs: Sequence[Sequence[Path]], n_train: int, n_test: int) -> None:
        self.runs = [[Path(p) for p in run] for run in runs]
        self.n_train, self.n_test = n_train, n_test

    def config(self) -> dict[str, Any]:
        # The checkpoints' content keys raytda's imported models on its own; this is the data.
        return {"n_train": self.n_train, "n_test": self.n_test}

    def build_model(self) -> nn.Module:
        return make_model()

    def train_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        return digits(self.n_train, self.n_test)[0]

    def test_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        return digits(self.n_train, self.n_test)[1]

    def checkpoints(self) -> list[list[Path]]:
        return self.runs


def my_ground_truth(x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor,
                    y_test: torch.Tensor, m: int, epochs: int, seed: int = 1000) -> GroundTruth:
    """Retrain ``m`` models on random halves of the training set; f (the margin) of each on
    the test set. What you would have from your own retraining experiments."""
    from raytda.core.outputs import margin

    rng = np.random.default_rng(seed)
    subsets, outputs = [], []
    for j in range(m):
        rows = np.sort(rng.choice(len(x), size=len(x) // 2, replace=False))
        model = train_plain(x[rows], y[rows], seed=seed + j, epochs=epochs)
        with torch.no_grad():
            outputs.append(margin(model(x_test), y_test).numpy())
        subsets.append(rows)
    return GroundTruth(subsets, np.stack(outputs))  # m lists of train indices, (m, n_test)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-train", type=int, default=300)
    p.add_argument("--n-test", type=int, default=30)
    p.add_argument("--epochs", type=int, default=6, help="epochs per run (3 checkpoints kept)")
    p.add_argument("--gt-models", type=int, default=8, help="retrainings for your ground truth")
    p.add_argument("--proj-dim", type=int, default=256)
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--out", default="runs/own_checkpoints",
                   help="checkpoints, results, proponents and the store")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from raytda.results import format_table, write_results

    args = parse_args(argv)
    out = Path(args.out)
    (x, y), (x_test, y_test) = digits(args.n_train, args.n_test)

    # 1. Your training code, outside raytda: 2 runs x 3 safetensors checkpoints.
    runs = train_runs(out / "checkpoints", x, y, runs=2, epochs=args.epochs)
    task = OwnCheckpoints(runs, args.n_train, args.n_test)
    store = str(out / "store")

    # 2. Attribution only: scores and costs, no LDS.
    sweep = Sweep(task, methods="trak", ensembles=ENSEMBLES, lds=None, store=store,
                  proj_dim=args.proj_dim, progress=not args.quiet)
    table = sweep.run()
    print(format_table(table))
    scores = sweep.scores("checkpoints:I=2,C=3")          # (n_test, n_train)
    top = torch.topk(scores[0], args.top_k)
    lines = ["rank,train_index,label,score"]
    lines += [f"{r},{i},{int(y[i])},{s:.6g}" for r, (s, i) in
              enumerate(zip(top.values.tolist(), top.indices.tolist()), start=1)]
    (out / "proponents_test0.csv").write_text("\n".join(lines) + "\n")
    print(f"\ntop {args.top_k} proponents of test sample 0 (label {int(y_test[0])}), "
          f"checkpoints I=2 C=3: train indices {top.indices.tolist()}, "
          f"labels {y[top.indices].tolist()}")

    # 3. LDS against your own ground truth (the same members: nothing is recomputed).
    truth = my_ground_truth(x, y, x_test, y_test, args.gt_models, args.epochs)
    scored = Sweep(task, methods="trak", ensembles=ENSEMBLES, lds=truth, store=store,
                   proj_dim=args.proj_dim, progress=not args.quiet)
    table = scored.run()
    path = write_results(table, out, scored.store.uri)
    print(f"\nLDS against your {truth.m} retrained models:")
    print(format_table(table))
    print(f"\nresults: {path}; proponents: {out / 'proponents_test0.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
