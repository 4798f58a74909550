"""Bring your own model: a small CNN of your own on CIFAR-2 (cat vs dog), attributed with TRAK.

The model is plain PyTorch (not one of raytda's models) with one ``nn.Dropout``; that
module is all a Dropout Ensemble needs: raytda finds it by a probe forward pass and drives
it with fixed masks through a forward hook. The Task below says how to build the model and
where the data is; raytda's trainer does the rest with the Task's ``recipe``.

Run it as a script (naive and Dropout ensembles, LDS over ``--lds-m`` retrained models;
results table, ``results.parquet`` and a plot under ``--out``)::

    python examples/cnn_cifar2.py --data-dir ../shared/data/cifar2 --out runs/cnn

or hand the Task class to the command line (it constructs with no arguments; ``--data-dir``
sets its ``data_dir``, else it reads ``$RAYTDA_DATA/cifar2``, else ``~/raytda-data/cifar2``)::

    raytda sweep --task examples/cnn_cifar2.py:Cifar2CNN --data-dir ../shared/data/cifar2 \\
        --ensemble 'naive:I=1|2' --ensemble 'dropout:I=1,D=5' --proj-dim 256 --lds-m 10 \\
        --out runs/cnn-cli

The defaults (500 train / 50 test images, 4 epochs, projection dimension 256, 10 LDS
subsets) took 77 s on a 2-core CPU that other work was loading heavily; their LDS is noisy
at that size.
"""

from __future__ import annotations

import argparse
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from raytda import LDSSpec, Recipe, Sweep, Task

DEFAULT_ENSEMBLES = ("naive:I=1", "naive:I=2", "dropout:I=1,D=5", "dropout:I=2,D=5")


class SmallCNN(nn.Module):
    """Two conv blocks and a two-layer head, with dropout before the classifier."""

    def __init__(self, width: int = 16, dropout: float = 0.25, n_classes: int = 2) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),            # 16x16
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),    # 8x8
            nn.AdaptiveAvgPool2d(4),                                                  # 4x4
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 16, 64), nn.ReLU(),
                                  nn.Dropout(dropout), nn.Linear(64, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@lru_cache(maxsize=2)  # train_data() and test_data() share one read of the file
def load_cifar2(root: str, n_train: int, n_test: int, seed: int = 0
                ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """``n_train`` / ``n_test`` images drawn with ``seed`` from ``root/cifar2.npz``, as
    float CHW tensors in [0, 1] with int64 labels."""
    with np.load(Path(root) / "cifar2.npz") as d:
        arrays = {k: d[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    rng = np.random.default_rng(seed)

    def pick(x: np.ndarray, y: np.ndarray, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        if n > len(x):
            raise ValueError(f"asked for {n} samples, the split has {len(x)}")
        idx = np.sort(rng.choice(len(x), size=n, replace=False))
        images = torch.from_numpy(x[idx].transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
        return images, torch.from_numpy(y[idx].astype(np.int64))

    return (pick(arrays["x_train"], arrays["y_train"], n_train),
            pick(arrays["x_test"], arrays["y_test"], n_test))


class Cifar2CNN(Task):
    """:class:`SmallCNN` on CIFAR-2; every argument has a default (so ``raytda sweep
    --task examples/cnn_cifar2.py:Cifar2CNN`` can construct it).

    ``data_dir`` is the directory holding ``cifar2.npz``; None resolves it like raytda's
    own settings: ``$RAYTDA_DATA/cifar2``, else ``~/raytda-data/cifar2``. It is not part of
    the Task's key (the same files may live elsewhere on another machine); the sizes are.
    """

    name = "cifar2-cnn"
    version = "1"

    def __init__(self, data_dir: str | None = None, n_train: int = 500, n_test: int = 50,
                 epochs: int = 4) -> None:
        self.data_dir, self.n_train, self.n_test = data_dir, n_train, n_test
        # An instance attribute, so the recipe (and with it the key) follows ``epochs``.
        self.recipe = Recipe(optimizer="adam", lr=2e-3, batch_size=50, epochs=epochs)

    def config(self) -> dict[str, Any]:
        return {"n_train": self.n_train, "n_test": self.n_test, "width": 16, "dropout": 0.25}

    def build_model(self) -> nn.Module:
        return SmallCNN(width=16, dropout=0.25)

    def root(self) -> Path:
        """The directory holding ``cifar2.npz``; raytda's one-line DataError when it is
        missing (the CLI prints it and exits 2)."""
        from raytda.data import DataError
        from raytda.data.location import data_dir

        root = data_dir("cifar2", self.data_dir)
        if not (root / "cifar2.npz").is_file():
            raise DataError(f"{root / 'cifar2.npz'} not found")
        return root

    def _splits(self):
        # Resolved when the data is first read, not on construction, so the class builds
        # with no arguments (and no data) wherever the command line imports it.
        return load_cifar2(str(self.root()), self.n_train, self.n_test)

    def train_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._splits()[0]

    def test_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._splits()[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None,
                   help="directory holding cifar2.npz (default $RAYTDA_DATA/cifar2, else "
                        "~/raytda-data/cifar2)")
    p.add_argument("--n-train", type=int, default=500)
    p.add_argument("--n-test", type=int, default=50)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--proj-dim", type=int, default=256)
    p.add_argument("--lds-m", type=int, default=10, help="LDS subsets (retrained models)")
    p.add_argument("--ensemble", action="append",
                   help=f"ensemble configuration (repeatable); default {' '.join(DEFAULT_ENSEMBLES)}")
    p.add_argument("--out", default="runs/cnn_cifar2", help="results, plot and the store")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def build_sweep(args: argparse.Namespace) -> Sweep:
    """The sweep ``main`` runs (also used to read its scores back from the store)."""
    task = Cifar2CNN(args.data_dir, args.n_train, args.n_test, args.epochs)
    return Sweep(task, methods="trak", ensembles=args.ensemble or DEFAULT_ENSEMBLES,
                 lds=LDSSpec(m=args.lds_m), store=str(Path(args.out) / "store"),
                 proj_dim=args.proj_dim, progress=not args.quiet)


def main(argv: list[str] | None = None) -> int:
    from raytda.data import DataError
    from raytda.results import format_table, write_results

    args = parse_args(argv)
    try:  # missing data: one line, before any work
        args.data_dir = str(Cifar2CNN(args.data_dir).root())
    except DataError as e:
        print(f"cnn_cifar2.py: error: {e}", file=sys.stderr)
        return 2
    sweep = build_sweep(args)
    table = sweep.run()
    results = write_results(table, args.out, sweep.store.uri)
    plots = sweep.plot(args.out)
    print(format_table(table))
    print(f"\nresults: {results}; plot: {', '.join(str(p) for p in plots)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
