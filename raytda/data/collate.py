"""Padding rows of different lengths into one batch, as a Hugging Face collator does.

A tokenizer gives each text as a dict of sequences (``input_ids``, ``attention_mask``) of
that text's own length. :class:`PadCollate` turns a list of such rows into one dict of
tensors: every sequence right-padded to the longest row of the batch (or to a fixed
``length``), ``attention_mask`` padded with 0 and ``labels`` with -100 (the ignore index,
so padded positions add nothing to the loss, f or Q), every other key with ``pad_id``.
Right padding leaves every real token where it was, so a causal model's outputs at real
positions are the same whatever the padded length.

It is a picklable object (a DataLoader with workers, and Ray, send it to other processes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from raytda.core.outputs import IGNORE_INDEX

#: pad values of the keys a tokenizer and a language-model collator give
DEFAULT_PAD_VALUES: dict[str, float] = {"attention_mask": 0, "labels": IGNORE_INDEX}

#: keys a tokenizer gives one value per token of ``input_ids``: a row whose value is
#: shorter or longer than its ids would be padded into a wrong mask without a word
PER_TOKEN_KEYS = ("attention_mask", "token_type_ids", "position_ids", "special_tokens_mask")


def length_mismatch(row: Mapping[str, Any]) -> str | None:
    """What is wrong when a row's per-token values (:data:`PER_TOKEN_KEYS`) are not as
    long as its ``input_ids`` (None: they are, or the row has no ids)."""
    if "input_ids" not in row:
        return None
    ids = as_tensor(row["input_ids"])
    if ids.dim() == 0:
        return None
    for key in PER_TOKEN_KEYS:
        if key in row:
            value = as_tensor(row[key])
            if value.dim() == 0 or value.shape[0] != ids.shape[0]:
                got = "no" if value.dim() == 0 else value.shape[0]
                return (f"{key!r} has {got} positions but 'input_ids' has {ids.shape[0]}; "
                        f"give every per-token key one value per token (as the tokenizer "
                        f"does)")
    return None


def as_tensor(value: Any) -> torch.Tensor:
    """One row's value (a tensor, numpy array, list or number) as a tensor."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    return torch.as_tensor(value)


class PadCollate:
    """rows (dicts of sequences) -> one dict of right-padded tensors (module docstring).

    Every value with at least one dimension is padded along its first one; numbers (one
    per row, e.g. a class label) are stacked.

    Args:
        pad_id: pad value of ``input_ids`` and of every key without its own value.
        pad_values: pad value per key (default: ``attention_mask`` 0, ``labels`` -100).
        length: pad every batch to at least this many positions (fixed shapes; None: to
            the batch's longest row).
        labels_from: when the rows have no ``labels``, make them from this key (e.g.
            ``"input_ids"`` for a causal LM, as ``DataCollatorForLanguageModeling(mlm=False)``
            does), padded with -100.
    """

    def __init__(self, pad_id: int = 0, pad_values: Mapping[str, float] | None = None,
                 length: int | None = None, labels_from: str | None = None) -> None:
        self.pad_id = pad_id
        self.pad_values = dict(DEFAULT_PAD_VALUES if pad_values is None else pad_values)
        self.length = length
        self.labels_from = labels_from

    def pad_value(self, key: str) -> float:
        """What ``key``'s padded positions hold."""
        return self.pad_values.get(key, self.pad_id)

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not rows:
            raise ValueError("no rows to collate")
        columns: dict[str, list[torch.Tensor]] = {k: [] for k in rows[0]}
        for i, row in enumerate(rows):
            problem = length_mismatch(row)
            if problem is not None:  # padding would hide it: real tokens read as padding
                raise ValueError(f"row {i} of the batch: {problem}")
            for k in columns:
                columns[k].append(as_tensor(row[k]))
        if self.labels_from is not None and "labels" not in columns:
            columns["labels"] = columns[self.labels_from]  # _stack copies
        return {k: self._stack(k, ts) for k, ts in columns.items()}

    def _stack(self, key: str, ts: list[torch.Tensor]) -> torch.Tensor:
        if ts[0].dim() == 0:
            return torch.stack(ts)
        longest = max(t.shape[0] for t in ts)
        size = longest if self.length is None else max(longest, self.length)
        out = torch.full((len(ts), size, *ts[0].shape[1:]), self.pad_value(key),
                         dtype=ts[0].dtype)
        for i, t in enumerate(ts):
            out[i, :t.shape[0]] = t
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PadCollate) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash(repr(self))

    def __repr__(self) -> str:
        return (f"PadCollate(pad_id={self.pad_id}, pad_values={self.pad_values}, "
                f"length={self.length}, labels_from={self.labels_from!r})")
