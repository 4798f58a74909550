"""Batch: dict inputs sliced by rows like a tensor, and passed to a model as keywords."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from raytda.core.batch import Batch, add_batch_dim, describe, vmap_view
from raytda.core.network import Network, call_module


def batch() -> Batch:
    ids = torch.arange(12).reshape(3, 4)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    return Batch({"input_ids": ids, "attention_mask": mask})


def test_rows_are_sliced_in_every_tensor_together() -> None:
    b = batch()
    assert len(b) == 3 and b.shape[0] == 3
    picked = b[torch.tensor([2, 0])]
    assert isinstance(picked, Batch) and len(picked) == 2
    assert picked["input_ids"].tolist() == [[8, 9, 10, 11], [0, 1, 2, 3]]
    assert picked["attention_mask"].tolist() == [[1, 0, 0, 0], [1, 1, 1, 1]]
    assert b[1:2]["attention_mask"].tolist() == [[1, 1, 0, 0]]


def test_unequal_rows_are_refused() -> None:
    with pytest.raises(ValueError, match="same number of rows"):
        Batch({"input_ids": torch.zeros(3, 4), "attention_mask": torch.zeros(2, 4)})


def test_to_keeps_integer_dtypes() -> None:
    b = batch().to("cpu")
    assert b["input_ids"].dtype == torch.int64 and b["attention_mask"].dtype == torch.int64


class Keywords(nn.Module):
    """Takes the batch as keyword arguments and returns an object with .logits, as
    Hugging Face models do."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(12, 5)
        self.drop = nn.Dropout(0.5)

    def forward(self, input_ids, attention_mask):
        h = self.drop(self.emb(input_ids)) * attention_mask.unsqueeze(-1)
        return type("Out", (), {"logits": h})()


def test_the_default_forward_calls_the_model_with_keywords_and_takes_logits() -> None:
    model = Keywords().eval()
    b = batch()
    logits = call_module(model, b)
    assert torch.equal(logits, model.emb(b["input_ids"]) * b["attention_mask"].unsqueeze(-1))
    # dropout sites are probed through the same forward, on a Batch of one row
    net = Network(model, b[:1], mask_dims=1)
    assert [s.shape for s in net.sites] == [(5,)]


def test_vmap_maps_over_the_dict_and_rebuilds_one_row_batches() -> None:
    b = batch()
    seen = torch.func.vmap(lambda x: call_module(Sum(), add_batch_dim(x))[0])(vmap_view(b))
    assert seen.tolist() == (b["input_ids"] * b["attention_mask"]).sum(1).tolist()
    assert describe(b) == "input_ids (3, 4) int64, attention_mask (3, 4) int64"


class Sum(nn.Module):
    def forward(self, input_ids, attention_mask):
        return (input_ids * attention_mask).sum(-1)
