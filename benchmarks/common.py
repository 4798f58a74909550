"""Helpers shared by the benchmark scripts: logging, tables, timing, GEMM rates, data."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from raytda.core import gemm
from raytda.data import DataError, Dataset
from raytda.tasks import get_task
from raytda.tasks.mlp import MNISTMLPTask

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "mnist"


# --------------------------------------------------------------------------- helpers


def setting_overrides(n_train: int | None, sets: Sequence[str]) -> dict[str, object]:
    """A setting's overrides from ``--n-train`` and repeated ``--set KEY=JSON``."""
    import json

    overrides: dict[str, object] = {} if n_train is None else {"n_train": n_train}
    for item in sets:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value)
    return overrides


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-markdown table (readable in a terminal too)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), sep, *(line(r) for r in cells[1:])])


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def best_of(fn: Callable[[], object], repeats: int) -> float:
    return min(timed(fn)[1] for _ in range(repeats))


def matmul_gflops(m: int, k: int, n: int, repeats: int = 3) -> dict[str, float]:
    """Best fp32 GEMM rate (GFLOP/s) for (m x k) @ (k x n) on this machine, right now,
    through each BLAS in the process (torch's MKL; numpy's OpenBLAS when present)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=gen)
    b = torch.randn(k, n, generator=gen)
    out = torch.empty(m, n)
    torch.mm(a, b, out=out)  # warm-up: pages faulted in, BLAS initialized
    rates = {"torch": 2.0 * m * k * n / best_of(lambda: torch.mm(a, b, out=out), repeats) / 1e9}
    try:
        gemm.resolve("numpy")
    except ValueError:
        return rates
    an, bn, on = a.numpy(), b.numpy(), out.numpy()
    np.matmul(an, bn, out=on)
    rates["numpy"] = 2.0 * m * k * n / best_of(lambda: np.matmul(an, bn, out=on), repeats) / 1e9
    return rates


def fmt_rates(runs: list[dict[str, float]]) -> str:
    """'torch 158 / 160, numpy 201 / 199' for start/end measurements."""
    return ", ".join(f"{name} " + " / ".join(f"{r[name]:.0f}" for r in runs)
                     for name in runs[0])


def mean_row_corr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over rows (test samples) of the Pearson correlation of two score matrices."""
    a = a.double() - a.double().mean(1, keepdim=True)
    b = b.double() - b.double().mean(1, keepdim=True)
    r = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-300)
    return float(r.mean())


# --------------------------------------------------------------------------- setup


def load_mnist_task(args: argparse.Namespace) -> tuple[MNISTMLPTask, Dataset] | None:
    """The MNIST-MLP task and its data, or None (with a message) if the data is missing."""
    data_dir = Path(args.data_dir)
    if not data_dir.is_dir():
        print(f"SKIP: MNIST directory {data_dir} not found; pass --data-dir pointing at the "
              f"IDX files (train-images-idx3-ubyte[.gz], ...).")
        return None
    task = get_task("mnist-mlp", data_dir=str(data_dir), n_train=args.n_train,
                    n_test=args.n_test, epochs=args.epochs)
    try:
        (x, y), (xt, yt) = task.load()
    except (DataError, FileNotFoundError) as e:
        print(f"SKIP: could not load MNIST from {data_dir}: {e}")
        return None
    return task, Dataset(x, y, xt, yt)
