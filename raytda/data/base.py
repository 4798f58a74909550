"""The dataset container of the built-in loaders, and their shared sampling step."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from raytda.data.samples import Samples, TensorSamples
from raytda.errors import RaytdaError


class DataError(RaytdaError, ValueError):
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

    @property
    def train(self) -> TensorSamples:
        return TensorSamples(self.x_train, self.y_train)

    @property
    def test(self) -> TensorSamples:
        return TensorSamples(self.x_test, self.y_test)

    def splits(self) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """``((x_train, y_train), (x_test, y_test))``: what a Task's ``load`` returns."""
        return (self.x_train, self.y_train), (self.x_test, self.y_test)


@dataclass(frozen=True)
class TaskData:
    """Train and test samples of a Task: tensors or a torch Dataset each."""

    train: Samples
    test: Samples

    @property
    def n_train(self) -> int:
        return self.train.n

    @property
    def n_test(self) -> int:
        return self.test.n


def choose(n_total: int, n: int, rng: np.random.Generator, what: str) -> np.ndarray:
    """Pick n distinct indices out of n_total, or explain why that is impossible."""
    if n > n_total:
        raise DataError(f"asked for {n} {what} samples but the source has only {n_total}; "
                        f"lower n_{what}")
    return np.sort(rng.choice(n_total, size=n, replace=False))


def check_shape(a: np.ndarray, ndim: int, path: object, what: str) -> None:
    """A loaded array must have the dimensions its file is meant to hold."""
    if a.ndim != ndim:
        raise DataError(f"{path} holds an array of shape {tuple(a.shape)}, not {what}")


def check_pairs(x: np.ndarray, y: np.ndarray, x_from: object, y_from: object) -> None:
    """Every sample needs its label: as many rows of labels as of features."""
    if len(x) != len(y):
        raise DataError(f"{x_from} has {len(x)} samples but {y_from} has {len(y)} labels; "
                        f"they must come in pairs")


def finish(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray, *,
           n_train: int, n_test: int, seed: int, scale: float,
           normalize: tuple[float, float] | None = None) -> Dataset:
    """Sample ``n_train`` / ``n_test`` rows with ``seed`` and convert to tensors.

    Features are divided by ``scale`` (the source's maximum value, so they lie in [0, 1]),
    then normalized with ``normalize = (mean, std)`` when it is set: ``(v - mean) / std``
    in float32, the order and precision of torchvision's ``ToTensor`` + ``Normalize``.
    """
    rng = np.random.default_rng(seed)
    itr = choose(len(xtr), n_train, rng, "train")
    ite = choose(len(xte), n_test, rng, "test")

    def as_x(a: np.ndarray) -> torch.Tensor:
        flat = np.ascontiguousarray(a.reshape(len(a), -1), dtype=np.float32)
        x = torch.from_numpy(flat / scale)
        if normalize is not None:
            mean, std = normalize
            x = (x - mean) / std
        return x

    def as_y(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(a, dtype=np.int64))

    return Dataset(as_x(xtr[itr]), as_y(ytr[itr]), as_x(xte[ite]), as_y(yte[ite]))
