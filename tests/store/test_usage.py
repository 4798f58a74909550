"""``raytda store du``: space per artifact kind, largest first, and the total, as the
files on disk add up; payload bytes split by tensor from the safetensors headers."""

from __future__ import annotations

import os

import torch

from raytda.cli import main
from raytda.store import ArtifactStore
from raytda.store.usage import OTHER, usage


def disk_bytes(root, kind: str) -> int:
    folder = root / kind
    return sum(os.path.getsize(folder / name) for name in os.listdir(folder))


def small_store(root) -> ArtifactStore:
    store = ArtifactStore(str(root))
    for i in range(3):  # three large feature blocks
        store.put(f"block-{i:020d}", {"train_features": torch.zeros(40, 64, dtype=torch.float16),
                                      "chol": torch.zeros(64, 64, dtype=torch.float64)},
                  {"i": i})
    for i in range(2):  # two checkpointed models
        store.put(f"model-{i:020d}", {f"epoch{e}/w": torch.zeros(10, 10) for e in (1, 2)},
                  {"i": i})
    store.put("scores-00000000000000000000", {"scores": torch.zeros(4, 40)}, {})
    return store


def test_kinds_largest_first_with_the_bytes_on_disk(tmp_path):
    root = tmp_path / "store"
    store = small_store(root)
    (root / "stray.txt").write_bytes(b"x" * 5)  # a file outside every kind's directory
    rows = usage(store, tensors=True)
    assert [u.kind for u in rows] == ["block", "model", "scores", OTHER]
    for u in rows[:3]:
        assert u.bytes == disk_bytes(root, u.kind)  # payloads and records
    assert [u.artifacts for u in rows] == [3, 2, 1, 0] and rows[3].bytes == 5
    block = rows[0]
    assert block.label == "feature blocks (member payloads)"
    assert block.tensors == {("chol", "F64"): 3 * 64 * 64 * 8,
                             ("train_features", "F16"): 3 * 40 * 64 * 2}
    # checkpoints' tensors count by name within the checkpoint
    assert rows[1].tensors == {("w", "F32"): 2 * 2 * 10 * 10 * 4}
    assert usage(store)[0].tensors == {}  # headers are read only when asked


def test_the_command_prints_each_kind_and_the_total(tmp_path, capsys):
    root = tmp_path / "store"
    small_store(root)
    assert main(["store", "du", str(root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    kinds = [line.split()[0] for line in lines[1:]]
    assert kinds == ["block", "model", "scores", "total"]
    total = sum(disk_bytes(root, k) for k in ("block", "model", "scores"))
    last = lines[-1].split()
    assert last[1] == "6" and int(last[2].replace(",", "")) == total
    assert main(["store", "du", str(root), "--tensors"]) == 0
    out = capsys.readouterr().out
    assert "chol (F64)" in out and "train_features (F16)" in out


def test_a_missing_store_is_one_error_line(tmp_path, capsys):
    assert main(["store", "du", str(tmp_path / "nowhere")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("raytda: error:")
