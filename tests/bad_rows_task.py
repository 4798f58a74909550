"""Tiny token-row Tasks whose data are wrong in one way each, for the bad-input table
(tests/test_cli_bad_input.py loads them with ``--task tests/bad_rows_task.py:Class``).

The model is an embedding and a linear head (no transformers needed): the checks these
rows must fail run before any training, so the model only has to accept the rows."""

from __future__ import annotations

import torch
from torch import nn

from raytda import Recipe, Task
from raytda.core.outputs import CAUSAL_LM, next_token_cross_entropy
from raytda.data.collate import PadCollate
from raytda.data.samples import DictSamples

VOCAB = 16
BAD_ROW = 5  # the row each broken split breaks: the error must name it


class TinyLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 8)
        self.head = nn.Linear(8, VOCAB)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        return self.head(self.embed(input_ids))


def rows(n: int, seed: int) -> list[dict]:
    """Tokenizer-shaped rows of 3 to 8 tokens."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(3, 9, (1,), generator=g))
        out.append({"input_ids": torch.randint(1, VOCAB, (length,), generator=g).tolist(),
                    "attention_mask": [1] * length})
    return out


class GoodRows(Task):
    """Rows that pass every check; subclasses break row BAD_ROW of the train split."""

    name = "bad-rows-good"
    version = "1"
    recipe = Recipe(optimizer="adam", lr=1e-2, batch_size=8, epochs=1)

    def build_model(self) -> nn.Module:
        return TinyLM()

    def output(self):
        return CAUSAL_LM

    def loss(self, logits, y):
        return next_token_cross_entropy(logits, y)

    def broken(self, row: dict) -> dict:
        return row

    def train_data(self):
        train = rows(12, 0)
        train[BAD_ROW] = self.broken(dict(train[BAD_ROW]))
        return DictSamples(train, collate=PadCollate(labels_from="input_ids"))

    def test_data(self):
        return DictSamples(rows(4, 1), collate=PadCollate(labels_from="input_ids"))


class ShortMask(GoodRows):
    """attention_mask two positions shorter than input_ids (padding would read real
    tokens as padding)."""

    name = "bad-rows-short-mask"

    def broken(self, row: dict) -> dict:
        return {**row, "attention_mask": row["attention_mask"][:-2]}


class LongMask(GoodRows):
    name = "bad-rows-long-mask"

    def broken(self, row: dict) -> dict:
        return {**row, "attention_mask": row["attention_mask"] + [1]}


class AllIgnored(GoodRows):
    """Every label -100: nothing to attribute."""

    name = "bad-rows-all-ignored"

    def broken(self, row: dict) -> dict:
        return {**row, "labels": [-100] * len(row["input_ids"])}

    def train_data(self):
        train = [{**r, "labels": list(r["input_ids"])} for r in rows(12, 0)]
        train[BAD_ROW] = self.broken(dict(train[BAD_ROW]))
        return DictSamples(train, collate=PadCollate())

    def test_data(self):
        return DictSamples([{**r, "labels": list(r["input_ids"])} for r in rows(4, 1)],
                           collate=PadCollate())


class IdBeyondVocab(GoodRows):
    """A token id equal to the vocabulary size (the labels copy it)."""

    name = "bad-rows-id-beyond-vocab"

    def broken(self, row: dict) -> dict:
        return {**row, "input_ids": [*row["input_ids"][:-1], VOCAB]}


class IdBeyondVocabInProbe(IdBeyondVocab):
    """The same in row 0, which the model is first run on."""

    name = "bad-rows-id-beyond-vocab-row0"

    def train_data(self):
        train = rows(12, 0)
        train[0] = self.broken(dict(train[0]))
        return DictSamples(train, collate=PadCollate(labels_from="input_ids"))


class ShortMaskInProbe(ShortMask):
    """The short mask in row 0, which the model is first run on."""

    name = "bad-rows-short-mask-row0"

    def train_data(self):
        train = rows(12, 0)
        train[0] = self.broken(dict(train[0]))
        return DictSamples(train, collate=PadCollate(labels_from="input_ids"))
