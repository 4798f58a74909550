"""Batch: named input tensors that share a row dimension, as Hugging Face models take them.

A tokenizer or collator gives a batch as a dict (``input_ids``, ``attention_mask``, ...),
every tensor with the samples along dimension 0. The compute core handles inputs x by
rows (``len(x)``, ``x.shape[0]``, ``x[rows]``, ``x.to(device)``); a ``Batch`` offers the
same on a dict of tensors, and ``keys()`` / ``[name]`` so that ``model(**batch)`` calls the
model with its keyword arguments. A plain tensor input stays a tensor: nothing about
that path changes.

``torch.func.vmap`` maps over a plain dict of tensors (a pytree) but not over an object it
does not know, so per-sample code hands it :meth:`Batch.as_dict` and rebuilds a Batch
per sample (:func:`add_batch_dim`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch


class Batch:
    """Named tensors with one leading row dimension (see the module docstring).

    ``batch["input_ids"]`` is one tensor; ``batch[rows]`` (an int tensor, a slice, a list)
    is a Batch of those rows; ``len(batch)`` and ``batch.shape[0]`` count rows.
    """

    __slots__ = ("_tensors",)

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        tensors = dict(tensors)
        if not tensors:
            raise ValueError("a Batch needs at least one tensor")
        rows = {k: (v.shape[0] if v.dim() else None) for k, v in tensors.items()}
        if None in rows.values() or len(set(rows.values())) != 1:
            raise ValueError(f"every tensor of a Batch needs the same number of rows, got {rows}")
        self._tensors = tensors

    # mapping side: what model(**batch) and dict(batch) read
    def keys(self):
        return self._tensors.keys()

    def values(self):
        return self._tensors.values()

    def items(self):
        return self._tensors.items()

    def __contains__(self, key: object) -> bool:
        return key in self._tensors

    def as_dict(self) -> dict[str, torch.Tensor]:
        """The tensors as a plain dict (a pytree torch.func maps over)."""
        return dict(self._tensors)

    # row side: what the compute core asks of an input batch
    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return self._tensors[key]
        return Batch({k: v[key] for k, v in self._tensors.items()})

    def __len__(self) -> int:
        return int(next(iter(self._tensors.values())).shape[0])

    @property
    def shape(self) -> torch.Size:
        """The batch shape: ``(rows,)`` (what ``x.shape[0]`` reads)."""
        return torch.Size([len(self)])

    @property
    def device(self) -> torch.device:
        return next(iter(self._tensors.values())).device

    def to(self, device: str | torch.device) -> Batch:
        """Every tensor on ``device`` (dtypes unchanged: ids and masks stay integers)."""
        return Batch({k: v.to(device) for k, v in self._tensors.items()})

    def __iter__(self) -> Iterator[str]:
        """The names, as a dict iterates (rows are counted by ``len``)."""
        return iter(self._tensors)

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}: {tuple(v.shape)} {str(v.dtype).removeprefix('torch.')}"
                          for k, v in self._tensors.items())
        return f"Batch({parts})"


def describe(x: Any) -> str:
    """A short description of an input batch for messages: shapes and dtypes."""
    if isinstance(x, Batch):
        return ", ".join(f"{k} {tuple(v.shape)} {str(v.dtype).removeprefix('torch.')}"
                         for k, v in x.items())
    if isinstance(x, torch.Tensor):
        return f"{tuple(x.shape)} {str(x.dtype).removeprefix('torch.')}"
    return type(x).__name__


def vmap_view(x: torch.Tensor | Batch) -> torch.Tensor | dict[str, torch.Tensor]:
    """What ``torch.func.vmap`` maps over for input ``x``: the tensor, or the Batch's dict."""
    return x.as_dict() if isinstance(x, Batch) else x


def add_batch_dim(x: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor | Batch:
    """One sample (as vmap hands it: a tensor or a dict) as a batch of one."""
    if isinstance(x, torch.Tensor):
        return x.unsqueeze(0)
    return Batch({k: v.unsqueeze(0) for k, v in x.items()})
