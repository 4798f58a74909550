"""Artifacts: a safetensors payload plus a JSON record, both written atomically.

Layout under the root: ``<kind>/<key>.st`` (tensors) and ``<kind>/<key>.json`` (record with
the producing spec, metadata, payload size and sha256). The record is written last, so its
presence means the artifact is complete. ``has`` checks the record and the payload size
(catches truncation cheaply); ``get`` also verifies the checksum. A corrupt artifact is
deleted and reported as :class:`CorruptArtifact` so the executor rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch loads only when an artifact's tensors are read or written
    import torch


class StoreError(RuntimeError):
    """The store location is unusable (not writable, unreachable)."""


class CorruptArtifact(RuntimeError):
    """An artifact failed verification; it has been removed and must be rebuilt."""

    def __init__(self, key: str, why: str) -> None:
        super().__init__(f"artifact {key} is corrupt ({why}); it was removed and will be rebuilt")
        self.key = key


def _filesystem(uri: str):
    import pyarrow.fs as pafs

    if "://" in uri:
        fs, path = pafs.FileSystem.from_uri(uri)
        return fs, path.rstrip("/")
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))


class ArtifactStore:
    """A directory of artifacts addressed by key; ``uri`` is a path or e.g. ``s3://b/p``."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.fs, self.root = _filesystem(uri)

    def __reduce__(self):  # pickles by URI so Ray workers reopen the filesystem themselves
        return (ArtifactStore, (self.uri,))

    def check_writable(self) -> None:
        """Fail early, with one clear line, if the store cannot be written."""
        probe = f"{self.root}/.write-probe-{uuid.uuid4().hex}"
        try:
            self.fs.create_dir(self.root, recursive=True)
            with self.fs.open_output_stream(probe) as f:
                f.write(b"ok")
            self.fs.delete_file(probe)
        except Exception as e:
            raise StoreError(f"store {self.uri!r} is not writable ({e.__class__.__name__}: {e}); "
                             f"choose another --store/--out location") from None

    def _paths(self, key: str) -> tuple[str, str]:
        kind = key.split("-", 1)[0]
        base = f"{self.root}/{kind}/{key}"
        return base + ".st", base + ".json"

    def _write_atomic(self, path: str, blob: bytes) -> None:
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with self.fs.open_output_stream(tmp) as f:
            f.write(blob)
        self.fs.move(tmp, path)

    def _read(self, path: str) -> bytes | None:
        try:
            with self.fs.open_input_stream(path) as f:
                return f.read()
        except (FileNotFoundError, OSError):
            return None

    def record(self, key: str) -> dict[str, Any] | None:
        """The JSON record of a complete artifact, or None."""
        blob = self._read(self._paths(key)[1])
        if blob is None:
            return None
        try:
            return json.loads(blob)
        except ValueError:
            return None

    def has(self, key: str) -> bool:
        """True if the artifact is complete (record present, payload of the recorded size)."""
        rec = self.record(key)
        if rec is None:
            return False
        import pyarrow.fs as pafs

        info = self.fs.get_file_info(self._paths(key)[0])
        if info.type != pafs.FileType.File or info.size != rec["bytes"]:
            self.delete(key)
            return False
        return True

    def put(self, key: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
            spec: dict[str, Any] | None = None) -> None:
        """Write payload then record, each atomically."""
        import torch

        from raytda.core.checkpoint import to_bytes

        payload = to_bytes(tensors) if tensors else to_bytes({"_empty": torch.zeros(0)})
        st_path, js_path = self._paths(key)
        self._write_atomic(st_path, payload)
        rec = {"key": key, "spec": spec, "meta": meta, "bytes": len(payload),
               "sha256": hashlib.sha256(payload).hexdigest()}
        self._write_atomic(js_path, json.dumps(rec, sort_keys=True, default=str).encode())

    def get(self, key: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors and metadata, checksum verified; raises CorruptArtifact or KeyError."""
        rec = self.record(key)
        if rec is None:
            raise KeyError(f"artifact {key} is not in store {self.uri}")
        payload = self._read(self._paths(key)[0])
        if payload is None or len(payload) != rec["bytes"]:
            self.delete(key)
            raise CorruptArtifact(key, "payload missing or truncated")
        if hashlib.sha256(payload).hexdigest() != rec["sha256"]:
            self.delete(key)
            raise CorruptArtifact(key, "checksum mismatch")
        from raytda.core.checkpoint import from_bytes

        tensors = from_bytes(payload)
        tensors.pop("_empty", None)
        return tensors, rec["meta"]

    def meta(self, key: str) -> dict[str, Any]:
        rec = self.record(key)
        if rec is None:
            raise KeyError(f"artifact {key} is not in store {self.uri}")
        return rec["meta"]

    def delete(self, key: str) -> None:
        for path in reversed(self._paths(key)):
            try:
                self.fs.delete_file(path)
            except (FileNotFoundError, OSError):
                pass

    def keys(self, kind: str | None = None) -> list[str]:
        """Keys of complete artifacts (optionally of one kind)."""
        import pyarrow.fs as pafs

        sel = pafs.FileSelector(self.root if kind is None else f"{self.root}/{kind}",
                                recursive=True, allow_not_found=True)
        return sorted(i.base_name[:-5] for i in self.fs.get_file_info(sel)
                      if i.type == pafs.FileType.File and i.base_name.endswith(".json"))
