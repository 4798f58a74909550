"""The row-by-row pass: every bad row named before any work, and fingerprints that follow
the content of the data and nothing else."""

from __future__ import annotations

import pytest
import torch

from raytda.data import check
from raytda.data.check import TargetRule, scan
from raytda.data.samples import DatasetSamples, TensorSamples
from raytda.specs import SpecError

CLASSES = TargetRule(classes=3, row_shape=())


class Rows(torch.utils.data.Dataset):
    """A map-style Dataset over given rows (optionally one row of another shape)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, odd_row: int | None = None) -> None:
        self.x, self.y, self.odd_row = x, y, odd_row

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        x = self.x[i]
        return (x[:-1] if i == self.odd_row else x), self.y[i]


def data(n: int = 50, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=gen), torch.randint(0, 3, (n,), generator=gen)


def test_fingerprint_follows_content_not_chunking_nor_container(monkeypatch):
    x, y = data()
    base = scan(TensorSamples(x, y), "train", "t", CLASSES)
    monkeypatch.setattr(check, "CHUNK_BYTES", 3 * 16)  # 3 rows a chunk
    assert scan(TensorSamples(x, y), "train", "t", CLASSES) == base
    assert scan(DatasetSamples(Rows(x, y)), "train", "t", CLASSES) == base
    x2 = x.clone()
    x2[37, 2] += 1e-6  # one value, deep in the set
    assert scan(TensorSamples(x2, y), "train", "t")["sha256"] != base["sha256"]
    y2 = y.clone()
    y2[41] = (y2[41] + 1) % 3  # one label
    assert scan(TensorSamples(x, y2), "train", "t")["sha256"] != base["sha256"]


def test_data_version_stands_in_for_the_digests():
    x, y = data()
    ident = scan(TensorSamples(x, y), "train", "t", fingerprint=False)
    assert "sha256" not in ident and ident["rows"] == 50


@pytest.mark.parametrize("container", ["tensors", "dataset"])
def test_each_bad_row_is_named_in_one_line(container, monkeypatch):
    monkeypatch.setattr(check, "CHUNK_BYTES", 8 * 16)  # several chunks: bad rows deep inside

    def run(x, y, rule=CLASSES, split="train"):
        s = TensorSamples(x, y) if container == "tensors" else DatasetSamples(Rows(x, y))
        with pytest.raises(SpecError) as e:
            scan(s, split, "task 'blobs'", rule)
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith(f"task 'blobs': {split} row ")
        return msg

    x, y = data()
    bad = x.clone()
    bad[33, 1] = float("nan")
    assert "row 33: input holds nan (not finite)" in run(bad, y)
    bad[33, 1] = float("inf")
    assert "row 33" in run(bad, y)
    yb = y.clone()
    yb[45] = 7
    assert "row 45: label 7 is outside 0..2" in run(x, yb)
    yb[45] = -1
    assert "row 45: label -1" in run(x, yb, split="test")
    assert "targets are float32" in run(x, y.float(), split="test")
    # a target per row where the logits want one per position (sequence models)
    assert "target shape" in run(x, y, TargetRule(3, (5,)))


def test_ignore_index_is_allowed_only_where_the_output_declares_it():
    x, y = data()
    y = torch.stack([y, y.flip(0)], 1)  # two targets a row, as a sequence output has
    y[10, 1] = -100
    scan(TensorSamples(x, y), "train", "t", TargetRule(3, (2,), ignore=-100))
    with pytest.raises(SpecError, match="label -100"):
        scan(TensorSamples(x, y), "train", "t", TargetRule(3, (2,)))


@pytest.mark.parametrize("row_shape", [(), (2,)])
def test_a_row_whose_every_target_is_ignored_is_named(row_shape):
    """Nothing to attribute: it would be scored 0 without a word."""
    x, y = data()
    y = y.clone() if not row_shape else torch.stack([y, y.flip(0)], 1)
    y[17] = -100
    with pytest.raises(SpecError, match="train row 17: every target is -100 .*nothing to "
                                        "attribute"):
        scan(TensorSamples(x, y), "train", "t", TargetRule(3, row_shape, ignore=-100))


def test_a_dataset_row_of_another_shape_is_named():
    x, y = data()
    with pytest.raises(SpecError, match=r"train row 22: input shape \(3,\) differs from row 0's"):
        scan(DatasetSamples(Rows(x, y, odd_row=22)), "train", "t", CLASSES)


def test_empty_split_is_an_error():
    with pytest.raises(SpecError, match="test split is empty"):
        scan(TensorSamples(torch.zeros(0, 4), torch.zeros(0).long()), "test", "t")
