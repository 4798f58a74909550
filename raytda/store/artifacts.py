"""Artifacts: a safetensors payload plus a JSON record, both written atomically and both
checksummed.

Layout under the root: ``<kind>/<key>.st`` (tensors) and ``<kind>/<key>.json`` (record:
the producing spec, metadata, payload size and sha256, the keys of the artifacts it was
made from (``inputs``) or of the job that wrote it (``owner``), and ``record_sha256``, a
digest of the record's own canonical JSON). The record is written last, so its presence
means the artifact is complete.

Three depths of checking, cheapest first: ``has`` reads the record (verifying its digest)
and compares the payload's size with the recorded one, and changes nothing, so planning is
read-only; ``get`` also verifies the payload's sha256 and removes an artifact that fails
(:class:`CorruptArtifact`, so the executor rebuilds it); ``raytda store verify``
(:mod:`raytda.store.verify`) does the latter for every artifact.

Every write goes to a temp file named after its writer's host and pid, then is renamed
into place. A failed write removes its temp file; a writer killed outright leaves one,
which :meth:`ArtifactStore.sweep_temp` removes once its writer is provably dead (or the
file is older than :data:`TEMP_MAX_AGE_S`). A full disk or quota is a :class:`StoreError`,
never a retried ``OSError``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import time
import uuid
from typing import TYPE_CHECKING, Any

from raytda.errors import RaytdaError
from raytda.store.holders import holder_dead, host_tag

if TYPE_CHECKING:  # torch loads only when an artifact's tensors are read or written
    import torch

TEMP_MARK = ".tmp-"
# A temp file of a writer on another host cannot be tied to a live process; no single
# artifact write takes anywhere near this long, so one this old has lost its writer.
TEMP_MAX_AGE_S = 6 * 3600.0
READ_CHUNK = 8 << 20
FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


class StoreError(RaytdaError, RuntimeError):
    """The store location is unusable (not writable, unreachable, full)."""


class CorruptArtifact(RaytdaError, RuntimeError):
    """An artifact failed verification and must be rebuilt."""

    def __init__(self, key: str, why: str, removed: bool = True) -> None:
        then = "it was removed and will be rebuilt" if removed else "rerun to rebuild it"
        super().__init__(f"artifact {key} is corrupt ({why}); {then}")
        self.key = key
        self.why = why


def record_digest(record: dict[str, Any]) -> str:
    """sha256 of a record's canonical JSON, without its own digest field."""
    body = {k: v for k, v in record.items() if k != "record_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()


def temp_name(path: str) -> str:
    """Where a write of ``path`` goes first: tagged with its writer's host and pid."""
    return f"{path}{TEMP_MARK}{host_tag()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def temp_is_stale(base_name: str, mtime: float, now: float) -> bool:
    """Whether a temp file has lost its writer: dead on this host, or too old."""
    if now - mtime > TEMP_MAX_AGE_S:
        return True
    parts = base_name.rsplit(TEMP_MARK, 1)[-1].split("-")
    if len(parts) != 3 or not parts[1].isdigit():
        return False  # not one of ours (or from an older raytda): only age decides
    return holder_dead(parts[0], int(parts[1]))


def full_disk(e: BaseException) -> OSError | None:
    """The ENOSPC / EDQUOT error behind ``e``, if there is one."""
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in FULL_DISK:
            return seen
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    return None


def _filesystem(uri: str):
    import pyarrow.fs as pafs

    if "://" in uri:
        fs, path = pafs.FileSystem.from_uri(uri)
        return fs, path.rstrip("/")
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))


class ArtifactStore:
    """A directory of artifacts addressed by key; ``uri`` is a path or e.g. ``s3://b/p``."""

    def __init__(self, uri: str) -> None:
        import pyarrow.fs as pafs

        from raytda.store.uri import absolute_location

        # Absolute from the start: the store is pickled by its URI to workers whose
        # working directory differs from the driver's.
        self.uri = absolute_location(uri)
        self.fs, self.root = _filesystem(self.uri)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    def __reduce__(self):  # pickles by URI so Ray workers reopen the filesystem themselves
        return (type(self), (self.uri,))

    def check_writable(self) -> None:
        """Fail early, with one clear line, if the store cannot be written."""
        probe = temp_name(f"{self.root}/.write-probe")
        try:
            self.fs.create_dir(self.root, recursive=True)
            with self.fs.open_output_stream(probe) as f:
                f.write(b"ok")
            self.fs.delete_file(probe)
        except Exception as e:
            self._discard(probe)
            raise StoreError(f"store {self.uri!r} is not writable ({e.__class__.__name__}: {e}); "
                             f"choose another --store/--out location") from None

    # ---------------------------------------------------------------- files

    def paths(self, key: str) -> tuple[str, str]:
        """(payload, record) paths of ``key``."""
        kind = key.split("-", 1)[0]
        base = f"{self.root}/{kind}/{key}"
        return base + ".st", base + ".json"

    def lease_path(self, key: str) -> str:
        return self.paths(key)[1][:-5] + ".lease"

    def _open_output(self, path: str):
        return self.fs.open_output_stream(path)

    def _discard(self, path: str) -> None:
        try:
            self.fs.delete_file(path)
        except (FileNotFoundError, OSError):
            pass

    def _write_atomic(self, path: str, blob: bytes) -> None:
        tmp = temp_name(path)
        try:
            self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
            with self._open_output(tmp) as f:
                f.write(blob)
            self.fs.move(tmp, path)
        except BaseException as e:
            self._discard(tmp)
            full = full_disk(e)
            if full is not None:
                raise StoreError(f"store {self.uri!r} is full ({os.strerror(full.errno)}) "
                                 f"while writing {path.rsplit('/', 1)[-1]}; free space or "
                                 f"choose another --store/--out location") from None
            raise

    def _read(self, path: str) -> bytes | None:
        try:
            with self.fs.open_input_stream(path) as f:
                return f.read()
        except (FileNotFoundError, OSError):
            return None

    def files(self) -> list[Any]:
        """Every file under the root (pyarrow ``FileInfo``s)."""
        import pyarrow.fs as pafs

        sel = pafs.FileSelector(self.root, recursive=True, allow_not_found=True)
        return [i for i in self.fs.get_file_info(sel) if i.type == pafs.FileType.File]

    def stale_temp_files(self, now: float | None = None) -> list[str]:
        """Temp files whose writer is gone (see :func:`temp_is_stale`)."""
        now = time.time() if now is None else now
        return [i.path for i in self.files() if TEMP_MARK in i.base_name
                and temp_is_stale(i.base_name, i.mtime.timestamp() if i.mtime else now, now)]

    def sweep_temp(self) -> list[str]:
        """Remove temp files left by writers that died; another live sweep's stay."""
        stale = self.stale_temp_files()
        for path in stale:
            self._discard(path)
        return stale

    # ---------------------------------------------------------------- records

    def read_record(self, key: str) -> tuple[dict[str, Any] | None, str | None]:
        """(record, None) if valid, (None, why) if corrupt, (None, None) if absent."""
        blob = self._read(self.paths(key)[1])
        if blob is None:
            return None, None
        try:
            rec = json.loads(blob)
        except ValueError:
            return None, "record is not valid JSON"
        if not isinstance(rec, dict) or "record_sha256" not in rec:
            return None, "record has no checksum"
        if rec["record_sha256"] != record_digest(rec):
            return None, "record checksum mismatch"
        return rec, None

    def record(self, key: str) -> dict[str, Any] | None:
        """The verified JSON record of an artifact, or None if absent or corrupt."""
        return self.read_record(key)[0]

    def problem(self, key: str) -> str | None:
        """What is wrong with ``key`` as far as its record and payload size tell (None:
        nothing); reads one small file and one file size, changes nothing."""
        import pyarrow.fs as pafs

        rec, why = self.read_record(key)
        if rec is None:
            return why or "missing"
        info = self.fs.get_file_info(self.paths(key)[0])
        if info.type != pafs.FileType.File:
            return "payload missing"
        if info.size != rec["bytes"]:
            return f"payload truncated ({info.size} of {rec['bytes']} bytes)"
        return None

    def has(self, key: str) -> bool:
        """True if the artifact looks complete: valid record, payload of its size."""
        return self.problem(key) is None

    def payload_problem(self, key: str, rec: dict[str, Any]) -> str | None:
        """Whether the payload matches ``rec``'s size and sha256, streamed in chunks."""
        h, size = hashlib.sha256(), 0
        try:
            with self.fs.open_input_stream(self.paths(key)[0]) as f:
                while chunk := f.read(READ_CHUNK):
                    h.update(chunk)
                    size += len(chunk)
        except (FileNotFoundError, OSError):
            return "payload missing"
        if size != rec["bytes"]:
            return f"payload truncated ({size} of {rec['bytes']} bytes)"
        if h.hexdigest() != rec["sha256"]:
            return "payload checksum mismatch"
        return None

    # ---------------------------------------------------------------- read / write

    def put(self, key: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
            spec: dict[str, Any] | None = None, inputs: list[str] | None = None,
            owner: str | None = None) -> None:
        """Write payload then record, each atomically. ``inputs``: keys of the artifacts
        this one was made from; ``owner``: the job that wrote it, when it is a part of
        that job's output (score chunks, block parts). Both let ``gc`` and ``verify``
        follow references."""
        import torch

        from raytda.core.checkpoint import to_bytes

        payload = to_bytes(tensors) if tensors else to_bytes({"_empty": torch.zeros(0)})
        st_path, js_path = self.paths(key)
        rec = {"key": key, "spec": spec, "meta": meta, "bytes": len(payload),
               "sha256": hashlib.sha256(payload).hexdigest(),
               "inputs": sorted(inputs) if inputs is not None else None, "owner": owner}
        rec = json.loads(json.dumps(rec, default=str))  # digest what a reader will see
        rec["record_sha256"] = record_digest(rec)
        self._write_atomic(st_path, payload)
        try:
            self._write_atomic(js_path, json.dumps(rec, sort_keys=True).encode())
        except BaseException:
            self._discard(st_path)  # a payload without its record is only clutter
            raise

    def get(self, key: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors and metadata, both checksums verified; raises CorruptArtifact (after
        removing the artifact) or KeyError."""
        rec, why = self.read_record(key)
        if rec is None and why is None:
            raise KeyError(f"artifact {key} is not in store {self.uri}")
        if rec is None:
            self.delete(key)
            raise CorruptArtifact(key, why)
        payload = self._read(self.paths(key)[0])
        if payload is None or len(payload) != rec["bytes"]:
            self.delete(key)
            raise CorruptArtifact(key, "payload missing or truncated")
        if hashlib.sha256(payload).hexdigest() != rec["sha256"]:
            self.delete(key)
            raise CorruptArtifact(key, "payload checksum mismatch")
        from raytda.core.checkpoint import from_bytes

        tensors = from_bytes(payload)
        tensors.pop("_empty", None)
        return tensors, rec["meta"]

    def meta(self, key: str) -> dict[str, Any]:
        """The artifact's metadata; raises KeyError if absent, CorruptArtifact if its
        record fails its checksum (left in place: reading changes nothing)."""
        rec, why = self.read_record(key)
        if rec is None and why is None:
            raise KeyError(f"artifact {key} is not in store {self.uri}")
        if rec is None:
            raise CorruptArtifact(key, why, removed=False)
        return rec["meta"]

    def delete(self, key: str) -> None:
        for path in reversed(self.paths(key)):
            self._discard(path)

    def keys(self, kind: str | None = None) -> list[str]:
        """Keys that have a record file (optionally of one kind)."""
        import pyarrow.fs as pafs

        sel = pafs.FileSelector(self.root if kind is None else f"{self.root}/{kind}",
                                recursive=True, allow_not_found=True)
        return sorted(i.base_name[:-5] for i in self.fs.get_file_info(sel)
                      if i.type == pafs.FileType.File and i.base_name.endswith(".json"))
