"""The dataset container and the dispatch from a DataSpec to its loader."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from raytda.specs import DataSpec


class DataError(ValueError):
    """Data could not be loaded; the message says which files are expected where."""


@dataclass(frozen=True)
class Dataset:
    """Train and test tensors of one setting.

    Classification: features flattened (float32), labels (int64). Text: ``x`` token ids and
    ``y`` next-token targets, both int64 of shape (n, seq_len).
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])


def choose(n_total: int, n: int, rng: np.random.Generator, what: str) -> np.ndarray:
    """Pick n distinct indices out of n_total, or explain why that is impossible."""
    if n > n_total:
        raise DataError(f"asked for {n} {what} samples but the source has only {n_total}; "
                        f"lower n_{what}")
    return np.sort(rng.choice(n_total, size=n, replace=False))


def finish(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray,
           spec: DataSpec, scale: float) -> Dataset:
    """Sample the spec's sizes with its seed and convert to tensors."""
    rng = np.random.default_rng(spec.seed)
    itr = choose(len(xtr), spec.n_train, rng, "train")
    ite = choose(len(xte), spec.n_test, rng, "test")

    def as_x(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a.reshape(len(a), -1), dtype=np.float32) / scale)

    def as_y(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(a, dtype=np.int64))

    return Dataset(as_x(xtr[itr]), as_y(ytr[itr]), as_x(xte[ite]), as_y(yte[ite]))


def load_data(spec: DataSpec) -> Dataset:
    """Load the samples a DataSpec describes."""
    if spec.source == "digits":
        from raytda.data.digits import load_digits
        return load_digits(spec)
    if spec.source == "synthetic":
        from raytda.data.synthetic import load_synthetic
        return load_synthetic(spec)
    if spec.source == "mnist":
        from raytda.data.mnist import load_mnist
        return load_mnist(spec)
    if spec.source == "cifar2":
        from raytda.data.cifar2 import load_cifar2
        return load_cifar2(spec)
    if spec.source == "text":
        from raytda.data.text import load_text
        return load_text(spec)
    if spec.source == "synthetic-text":
        from raytda.data.text import load_synthetic_text
        return load_synthetic_text(spec)
    raise DataError(f"no loader for source {spec.source!r}")
