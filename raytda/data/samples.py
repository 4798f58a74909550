"""Samples: the one way the compute core reads data, from tensors or a torch ``Dataset``.

``TensorSamples`` holds (x, y) tensors; ``DatasetSamples`` reads any map-style
``torch.utils.data.Dataset`` of ``(x, y)`` items through a ``DataLoader``, a chunk at a
time, so the data never has to fit in memory at once. Both number their rows 0..n-1;
that number is what per-sample dropout masks are keyed by, whatever batch a row is in.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch


class Samples:
    """Rows 0..n-1 of (x, y) pairs."""

    n: int

    def take(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) of the given rows, in that order."""
        raise NotImplementedError

    def subset(self, rows: np.ndarray | torch.Tensor) -> Samples:
        """The given rows as samples of their own (renumbered 0..len(rows)-1)."""
        raise NotImplementedError

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """All of x and y as tensors when they already are (no copy), else None."""
        return None

    def chunks(self, size: int) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """(first row, x, y) of consecutive chunks of at most ``size`` rows."""
        for start in range(0, self.n, size):
            yield start, *self.take(torch.arange(start, min(self.n, start + size)))

    def example(self) -> torch.Tensor:
        """A batch of one input (row 0), for probing a model's shapes."""
        return self.take(torch.arange(1))[0]

    def __len__(self) -> int:
        return self.n


class TensorSamples(Samples):
    """Samples held as tensors: ``x[i]`` and ``y[i]`` are row i."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}")
        self.x, self.y, self.n = x, y, int(x.shape[0])

    def take(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[rows], self.y[rows]

    def chunks(self, size: int) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        for start in range(0, self.n, size):  # views, no copies
            yield start, self.x[start:start + size], self.y[start:start + size]

    def subset(self, rows: np.ndarray | torch.Tensor) -> TensorSamples:
        idx = torch.as_tensor(np.asarray(rows), dtype=torch.long)
        return TensorSamples(self.x[idx], self.y[idx])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x, self.y

    def to(self, device: str | torch.device) -> TensorSamples:
        return TensorSamples(self.x.to(device), self.y.to(device))


class DatasetSamples(Samples):
    """A map-style torch ``Dataset`` whose items are ``(x, y)``, read through a DataLoader."""

    def __init__(self, dataset: Any, rows: np.ndarray | None = None, num_workers: int = 0) -> None:
        self.dataset = dataset
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self.n = len(dataset) if rows is None else len(self.rows)
        self.num_workers = num_workers

    def _index(self, rows: torch.Tensor) -> list[int]:
        r = rows.tolist()
        return r if self.rows is None else self.rows[r].tolist()

    def _load(self, index: list[int], batch_size: int):
        from torch.utils.data import DataLoader, Subset

        # A private generator: a DataLoader draws its base seed from the global RNG
        # otherwise, which would shift the training's seeded dropout stream.
        return DataLoader(Subset(self.dataset, index), batch_size=batch_size, shuffle=False,
                          num_workers=self.num_workers, generator=torch.Generator())

    def take(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        index = self._index(rows)
        x, y = next(iter(self._load(index, max(1, len(index)))))
        return x, y

    def chunks(self, size: int) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        start = 0
        for x, y in self._load(self._index(torch.arange(self.n)), size):
            yield start, x, y
            start += x.shape[0]

    def subset(self, rows: np.ndarray | torch.Tensor) -> DatasetSamples:
        rows = np.asarray(rows, dtype=np.int64)
        base = rows if self.rows is None else self.rows[rows]
        return DatasetSamples(self.dataset, base, self.num_workers)


def as_samples(data: Any) -> Samples:
    """``Samples``, an ``(x, y)`` pair of tensors, or a torch ``Dataset`` of (x, y) items."""
    if isinstance(data, Samples):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(
            isinstance(t, torch.Tensor) for t in data):
        return TensorSamples(data[0], data[1])
    if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        return DatasetSamples(data)
    raise TypeError(f"data must be an (x, y) pair of tensors or a torch Dataset of (x, y) "
                    f"items, got {type(data).__name__}")
