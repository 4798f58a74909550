"""Artifact store: atomic, verified, corruption detected, URIs accepted."""

from __future__ import annotations

import pytest
import torch

from raytda.store import ArtifactStore, CorruptArtifact, StoreError
from raytda.store.artifacts import TEMP_MARK, TEMP_MAX_AGE_S, temp_is_stale, temp_name


def test_round_trip_and_listing(tmp_path):
    store = ArtifactStore(str(tmp_path))
    store.put("block-abc", {"block": torch.arange(6.0).reshape(2, 3)}, {"serve_time_s": 1.5})
    assert store.has("block-abc") and store.keys("block") == ["block-abc"]
    tensors, meta = store.get("block-abc")
    assert torch.equal(tensors["block"], torch.arange(6.0).reshape(2, 3))
    assert meta == {"serve_time_s": 1.5}
    assert not list(tmp_path.rglob("*.tmp-*"))  # no temp files left behind


def test_file_uri_works(tmp_path):
    store = ArtifactStore(f"file://{tmp_path}")
    store.put("q-1", {"q": torch.ones(3)}, {})
    assert ArtifactStore(str(tmp_path)).has("q-1")


def test_truncated_payload_is_not_reported_present(tmp_path):
    store = ArtifactStore(str(tmp_path))
    store.put("model-x", {"w": torch.randn(100)}, {})
    payload = next(tmp_path.rglob("model-x.st"))
    payload.write_bytes(payload.read_bytes()[:50])
    assert not store.has("model-x")
    assert payload.exists()  # has() only reads: planning must leave the store as it is
    with pytest.raises(CorruptArtifact, match="truncated"):
        store.get("model-x")  # a run reading it removes it, so it is rebuilt
    assert not payload.exists()


def test_flipped_byte_fails_the_checksum(tmp_path):
    store = ArtifactStore(str(tmp_path))
    store.put("model-y", {"w": torch.zeros(100)}, {})
    payload = next(tmp_path.rglob("model-y.st"))
    blob = bytearray(payload.read_bytes())
    blob[-1] ^= 0xFF
    payload.write_bytes(bytes(blob))
    with pytest.raises(CorruptArtifact, match="checksum"):
        store.get("model-y")
    assert not store.has("model-y")


def test_payload_without_record_is_absent(tmp_path):
    store = ArtifactStore(str(tmp_path))
    store.put("q-z", {"q": torch.ones(2)}, {})
    next(tmp_path.rglob("q-z.json")).unlink()
    assert not store.has("q-z")
    with pytest.raises(KeyError):
        store.get("q-z")


def test_unwritable_store_fails_early(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="not writable"):
        ArtifactStore(str(blocker / "store")).check_writable()


def test_store_pickles_by_uri(tmp_path):
    import pickle

    again = pickle.loads(pickle.dumps(ArtifactStore(str(tmp_path))))
    assert again.root == str(tmp_path)


def test_an_edited_record_fails_its_checksum(tmp_path):
    # The record holds a result's LDS and costs: an edit must not pass as data.
    store = ArtifactStore(str(tmp_path))
    store.put("result-r", {"x": torch.zeros(2)}, {"lds": 0.25})
    record = next(tmp_path.rglob("result-r.json"))
    record.write_text(record.read_text().replace("0.25", "0.95"))
    assert not store.has("result-r") and store.record("result-r") is None
    with pytest.raises(CorruptArtifact, match="record checksum"):
        store.meta("result-r")
    assert record.exists()  # meta() only reads
    with pytest.raises(CorruptArtifact, match="record checksum"):
        store.get("result-r")
    assert not record.exists()


def test_records_name_their_inputs_or_owner(tmp_path):
    store = ArtifactStore(str(tmp_path))
    store.put("block-b", {"x": torch.zeros(1)}, {}, inputs=["model-m", "basemodel-a"])
    store.put("blockpart-p", {"x": torch.zeros(1)}, {}, owner="block-b")
    assert store.record("block-b")["inputs"] == ["basemodel-a", "model-m"]
    assert store.record("blockpart-p")["owner"] == "block-b"


class _FullStream:
    """An output stream on a full disk: the first write fails with ENOSPC."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, blob):
        import errno

        raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_is_one_store_error_and_leaves_no_temp_file(tmp_path, monkeypatch):
    store = ArtifactStore(str(tmp_path))
    real = ArtifactStore._open_output

    def open_output(self, path):
        real(self, path).close()  # the temp file exists, as after a failed write
        return _FullStream()

    monkeypatch.setattr(ArtifactStore, "_open_output", open_output)
    with pytest.raises(StoreError, match="is full") as err:
        store.put("model-f", {"w": torch.ones(4)}, {})
    assert "\n" not in str(err.value)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # no temp, no half artifact


def test_a_failed_record_write_takes_its_payload_along(tmp_path, monkeypatch):
    store = ArtifactStore(str(tmp_path))
    real = ArtifactStore._open_output
    monkeypatch.setattr(ArtifactStore, "_open_output",
                        lambda self, path: _FullStream() if ".json" in path else real(self, path))
    with pytest.raises(StoreError):
        store.put("q-f", {"q": torch.ones(4)}, {})
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_temp_files_are_stale_only_once_their_writer_is_gone(tmp_path):
    import os
    import subprocess
    import sys
    import time

    now = time.time()
    mine = temp_name(str(tmp_path / "model-a.st")).rsplit("/", 1)[-1]
    assert not temp_is_stale(mine, now, now)  # this process is alive
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    theirs = mine.replace(f"-{os.getpid()}-", f"-{dead}-")
    assert temp_is_stale(theirs, now, now)
    other_host = f"model-a.st{TEMP_MARK}00000000-{os.getpid()}-abc"
    assert not temp_is_stale(other_host, now, now)  # another host's: only age tells
    assert temp_is_stale(other_host, now - TEMP_MAX_AGE_S - 1, now)


def test_a_sweep_on_a_full_disk_fails_with_one_line(tmp_path, monkeypatch, capsys):
    import tiny_task

    from raytda.cli import main

    real = ArtifactStore._open_output

    def open_output(self, path):
        real(self, path).close()
        return _FullStream()

    monkeypatch.setattr(ArtifactStore, "_open_output", open_output)
    store = tmp_path / "store"
    assert main(["sweep", *tiny_task.cli_args(str(store), str(tmp_path / "out"))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("raytda: error: store") and "full" in err[0]
    assert not [p for p in store.rglob("*") if p.is_file()]
