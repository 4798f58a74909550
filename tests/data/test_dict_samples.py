"""Dict rows (tokenizer output of ragged lengths): padding, labels, and the row check."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raytda.core.batch import Batch
from raytda.core.outputs import IGNORE_INDEX
from raytda.data.check import TargetRule, scan
from raytda.data.collate import PadCollate
from raytda.data.samples import DatasetSamples, DictSamples, TensorSamples, as_samples
from raytda.specs import SpecError

ROWS = [{"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [5, 6, 7]},
        {"input_ids": [8], "attention_mask": [1], "labels": [8]},
        {"input_ids": [9, 10], "attention_mask": [1, 1], "labels": [9, 10]}]


def rows(**change) -> list[dict]:
    """Copies of ROWS; ``change`` maps a row number to entries replaced in that row."""
    out = [dict(r) for r in ROWS]
    for i, entries in change.items():
        out[int(i.removeprefix("r"))].update(entries)
    return out


def test_pad_collate_pads_right_with_each_keys_value() -> None:
    batch = PadCollate(pad_id=3)(ROWS)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 3, 3], [9, 10, 3]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    assert batch["labels"].tolist() == [[5, 6, 7], [8, -100, -100], [9, 10, -100]]
    fixed = PadCollate(length=5)(ROWS)
    assert {tuple(v.shape) for v in fixed.values()} == {(3, 5)}


@pytest.mark.parametrize("mask", [[1, 1], [1, 1, 1, 1]])
def test_pad_collate_refuses_a_mask_not_as_long_as_the_ids(mask) -> None:
    """Padded to the batch's longest row, a short mask would read real tokens as padding."""
    bad = [*ROWS[:1], {**ROWS[1], "input_ids": [8, 4, 4], "attention_mask": mask}]
    with pytest.raises(ValueError, match=f"row 1 of the batch: 'attention_mask' has "
                                         f"{len(mask)} positions but 'input_ids' has 3"):
        PadCollate()(bad)


def test_labels_from_input_ids_as_a_language_model_collator_makes_them() -> None:
    plain = [{k: r[k] for k in ("input_ids", "attention_mask")} for r in ROWS]
    assert torch.equal(PadCollate(labels_from="input_ids")(plain)["labels"],
                       PadCollate()(ROWS)["labels"])


def test_x_is_a_batch_without_labels_and_y_ignores_every_masked_position() -> None:
    # Labels padded with a real token id (not -100) and a row whose mask hides its end:
    # wherever attention_mask is 0 the target must still be ignored.
    masked = rows(r0={"attention_mask": [1, 1, 0]})
    samples = DictSamples(masked, collate=PadCollate(pad_values={"attention_mask": 0}))
    x, y = samples.take(torch.arange(3))
    assert isinstance(x, Batch) and set(x.keys()) == {"input_ids", "attention_mask"}
    assert y.tolist() == [[5, 6, IGNORE_INDEX], [8, IGNORE_INDEX, IGNORE_INDEX],
                          [9, 10, IGNORE_INDEX]]


def test_chunks_subsets_and_takes_read_the_same_rows() -> None:
    samples = DictSamples(rows())
    firsts = [(start, x["input_ids"][:, 0].tolist()) for start, x, _ in samples.chunks(2)]
    assert firsts == [(0, [5, 8]), (2, [9])]
    sub = samples.subset(np.array([2, 0]))
    assert isinstance(sub, DictSamples) and sub.collate == samples.collate
    assert sub.take(torch.arange(2))[1].tolist() == [[9, 10, -100], [5, 6, 7]]


def test_as_samples_tells_dict_rows_from_pairs() -> None:
    assert isinstance(as_samples(ROWS), DictSamples)
    columns = as_samples({k: torch.tensor([[1, 2], [3, 4]]) for k in ("input_ids", "labels")})
    assert isinstance(columns, DictSamples) and columns.take(torch.arange(2))[1].tolist() == [
        [1, 2], [3, 4]]
    pairs = [(torch.zeros(2), torch.tensor(0))] * 3
    assert isinstance(as_samples(pairs), DatasetSamples)
    assert not isinstance(as_samples(pairs), DictSamples)
    assert isinstance(as_samples((torch.zeros(3, 2), torch.zeros(3))), TensorSamples)


class RowDataset(torch.utils.data.Dataset):
    """The same rows as a torch Dataset of tensors."""

    def __len__(self) -> int:
        return len(ROWS)

    def __getitem__(self, i: int) -> dict:
        return {k: torch.tensor(v) for k, v in ROWS[i].items()}


def test_fingerprint_is_the_rows_not_how_they_are_held_or_batched(monkeypatch) -> None:
    import raytda.data.check as check

    base = scan(DictSamples(ROWS), "train", "t")["sha256"]
    assert scan(DictSamples(RowDataset()), "train", "t")["sha256"] == base
    monkeypatch.setattr(check, "CHUNK_BYTES", 1)  # batch size plays no part either
    assert scan(DictSamples(ROWS), "train", "t")["sha256"] == base
    assert scan(DictSamples(rows(r2={"input_ids": [9, 11]})), "train", "t")["sha256"][0] != base[0]
    assert scan(DictSamples(rows(r1={"labels": [7]})), "train", "t")["sha256"][1] != base[1]


RULE = TargetRule(classes=12, row_shape=(None,), ignore=IGNORE_INDEX)


@pytest.mark.parametrize("change, message", [
    ({"r1": {"attention_mask": None}}, "train row 1: .*lacks \\['attention_mask'\\]"),
    ({"r2": {"extra": [1, 2]}}, "train row 2: has extra \\['extra'\\]"),
    ({"r1": {"input_ids": [8.5]}}, "train row 1: 'input_ids' is float32 .* row 0's is int64"),
    ({"r2": {"labels": [9, 12]}}, "train row 2: label 12 is outside 0..11 or -100"),
    ({"r1": {"input_ids": [], "attention_mask": [], "labels": []}},
     "train row 1: 'input_ids' is empty"),
])
def test_a_bad_row_is_named_in_one_line(change, message) -> None:
    data = rows(**change)
    for r in data:
        for k in [k for k, v in r.items() if v is None]:
            del r[k]
    with pytest.raises(SpecError, match=message) as err:
        scan(DictSamples(data), "train", "task 't'", RULE)
    assert "\n" not in str(err.value) and str(err.value).startswith("task 't': ")


def test_floats_must_be_finite_and_rows_must_be_dicts() -> None:
    feats = [{"features": [0.5, 1.0], "labels": 1}, {"features": [np.nan, 1.0], "labels": 0}]
    with pytest.raises(SpecError, match="train row 1: 'features' holds nan"):
        scan(DictSamples(feats), "train", "t")
    with pytest.raises(SpecError, match="test row 1: is a list, not a dict like row 0"):
        scan(DictSamples([ROWS[0], [1, 2]]), "test", "t")
    with pytest.raises(SpecError, match="need a 'labels' entry"):
        DictSamples([{"input_ids": [1]}]).take(torch.arange(1))


def test_the_identity_records_each_keys_dtype_and_rank() -> None:
    ident = scan(DictSamples(ROWS), "train", "t", RULE)
    assert ident["rows"] == 3
    assert ident["x"] == {"attention_mask": ["torch.int64", 1], "input_ids": ["torch.int64", 1]}
    assert ident["y"] == ["torch.int64", 1]
