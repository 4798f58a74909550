"""Samples: the one way the compute core reads data, from tensors or a torch ``Dataset``.

``TensorSamples`` holds (x, y) tensors; ``DatasetSamples`` reads any map-style
``torch.utils.data.Dataset`` of ``(x, y)`` items through a ``DataLoader``, a chunk at a
time, so the data never has to fit in memory at once. ``DictSamples`` reads rows that
are dicts (``input_ids``, ``attention_mask``, ``labels``: what a Hugging Face tokenizer
gives per text, of ragged lengths) and pads each batch with a collate; its x is a
:class:`~raytda.core.batch.Batch` of every key but the labels, and y the labels. All
number their rows 0..n-1; that number is what per-sample dropout masks are keyed by,
whatever batch a row is in.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from raytda.core.batch import Batch
from raytda.core.outputs import IGNORE_INDEX
from raytda.data.collate import PadCollate
from raytda.specs import SpecError


class Samples:
    """Rows 0..n-1 of (x, y) pairs."""

    n: int

    def take(self, rows: torch.Tensor) -> tuple[torch.Tensor | Batch, torch.Tensor]:
        """(x, y) of the given rows, in that order."""
        raise NotImplementedError

    def subset(self, rows: np.ndarray | torch.Tensor) -> Samples:
        """The given rows as samples of their own (renumbered 0..len(rows)-1)."""
        raise NotImplementedError

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """All of x and y as tensors when they already are (no copy), else None."""
        return None

    def chunks(self, size: int) -> Iterator[tuple[int, torch.Tensor | Batch, torch.Tensor]]:
        """(first row, x, y) of consecutive chunks of at most ``size`` rows."""
        for start in range(0, self.n, size):
            yield start, *self.take(torch.arange(start, min(self.n, start + size)))

    def example(self) -> torch.Tensor | Batch:
        """A batch of one input (row 0), for probing a model's shapes."""
        return self.take(torch.arange(1))[0]

    def __len__(self) -> int:
        return self.n


class TensorSamples(Samples):
    """Samples held as tensors: ``x[i]`` and ``y[i]`` are row i. ``x`` may be a
    :class:`~raytda.core.batch.Batch` (an already padded dict batch), sliced alike."""

    def __init__(self, x: torch.Tensor | Batch, y: torch.Tensor) -> None:
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


class DictSamples(DatasetSamples):
    """Rows that are dicts of sequences, padded per batch (see the module docstring).

    ``dataset`` is any sequence of dicts (a list, a torch Dataset, a Hugging Face
    ``datasets.Dataset``) whose values are tensors, arrays or lists; rows may differ in
    length. ``collate`` turns a list of rows into one dict of tensors (default
    :class:`~raytda.data.collate.PadCollate`: right-padded to the batch's longest row).
    y is the collated ``label_key`` with ``IGNORE_INDEX`` wherever ``attention_mask`` is 0,
    so padding never enters f or Q whatever value the collate padded labels with.
    """

    def __init__(self, dataset: Any, rows: np.ndarray | None = None, num_workers: int = 0,
                 collate: Any = None, label_key: str = "labels") -> None:
        super().__init__(dataset, rows, num_workers)
        self.collate = PadCollate() if collate is None else collate
        self.label_key = label_key

    def item(self, row: int) -> Any:
        """Row ``row`` as the dataset gives it (a dict, before collating)."""
        return self.dataset[row if self.rows is None else int(self.rows[row])]

    def collate_xy(self, items: list[Any]) -> tuple[Batch, torch.Tensor]:
        """(x, y) of a list of rows: collated, labels split off and masked by
        ``attention_mask``."""
        batch = dict(self.collate(items))
        if self.label_key not in batch:
            raise SpecError(f"dict rows need a {self.label_key!r} entry (the targets; for a "
                            f"causal LM a copy of input_ids, or PadCollate(labels_from="
                            f"'input_ids')); the rows have {sorted(batch)}")
        y = batch.pop(self.label_key)
        mask = batch.get("attention_mask")
        if mask is not None and mask.shape == y.shape and not y.is_floating_point():
            y = y.masked_fill(mask == 0, IGNORE_INDEX)
        return Batch(batch), y

    def _load(self, index: list[int], batch_size: int):
        from torch.utils.data import DataLoader, Subset

        # A private generator, as in DatasetSamples._load (the global RNG stays untouched).
        return DataLoader(Subset(self.dataset, index), batch_size=batch_size, shuffle=False,
                          num_workers=self.num_workers, collate_fn=self.collate_xy,
                          generator=torch.Generator())

    def subset(self, rows: np.ndarray | torch.Tensor) -> DictSamples:
        rows = np.asarray(rows, dtype=np.int64)
        base = rows if self.rows is None else self.rows[rows]
        return DictSamples(self.dataset, base, self.num_workers, self.collate, self.label_key)


class ColumnRows:
    """A dict of columns (``{"input_ids": (n, T) tensor, ...}``, what a tokenizer gives
    for a list of texts) read as rows: row i is ``{key: column[i]}``."""

    def __init__(self, columns: Mapping[str, Any]) -> None:
        self.columns = dict(columns)
        sizes = {k: len(v) for k, v in self.columns.items()}
        if not sizes or len(set(sizes.values())) != 1:
            raise SpecError(f"a dict of columns needs one length for every column, got {sizes}")
        self.n = next(iter(sizes.values()))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {k: v[i] for k, v in self.columns.items()}


def _first_is_dict(data: Any) -> bool:
    try:
        return len(data) > 0 and isinstance(data[0], Mapping)
    except Exception:  # an unreadable row is named by the data check, not here
        return False


def as_samples(data: Any) -> Samples:
    """``Samples``, an ``(x, y)`` pair of tensors, a torch ``Dataset`` of (x, y) items,
    a sequence (list, Dataset) of dict rows, or a dict of columns (see ``DictSamples``)."""
    if isinstance(data, Samples):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(
            isinstance(t, torch.Tensor) for t in data):
        return TensorSamples(data[0], data[1])
    if isinstance(data, Mapping):
        return DictSamples(ColumnRows(data))
    if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        return DictSamples(data) if _first_is_dict(data) else DatasetSamples(data)
    raise TypeError(f"data must be an (x, y) pair of tensors, a torch Dataset of (x, y) "
                    f"items, or dict rows, got {type(data).__name__}")
