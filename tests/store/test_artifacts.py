"""Artifact store: atomic, verified, corruption detected, URIs accepted."""

from __future__ import annotations

import pytest
import torch

from raytda.store import ArtifactStore, CorruptArtifact, StoreError


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
    assert not payload.exists()  # removed so it is rebuilt, never used


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
