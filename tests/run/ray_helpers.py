"""Helpers of the executor tests: one small sweep as the CLI builds it, and ways to count,
verify and time-stamp store artifacts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd

from raytda.api import Sweep
from raytda.cli import build_sweep, parser
from raytda.store import ArtifactStore

# 3 models, 5 LDS models, q/blocks for naive and dropout members, 5 configurations.
SWEEP_ARGS = ["--setting", "toy-mlp", "--ensemble", "naive:I=1|2|3",
              "--ensemble", "dropout:I=1|2,D=3", "--lds-m", "5", "--proj-dim", "16", "--quiet"]
KINDS = ("model", "ldsmodel", "q", "block", "result", "scores")


def make_sweep(store: str | Path, *extra: str, executor=None) -> Sweep:
    """The test sweep exactly as the CLI builds it (so CLI and API runs share keys)."""
    sweep = build_sweep(parser().parse_args(["sweep", *SWEEP_ARGS, "--store", str(store),
                                             *extra]))
    if executor is not None:
        sweep._executor = executor
    return sweep


def lds_by_label(df: pd.DataFrame) -> dict[str, float]:
    return dict(zip(df["label"], df["lds"], strict=True))


def counts(store: ArtifactStore) -> dict[str, int]:
    return {k: len(store.keys(k)) for k in KINDS}


def verify_all(store: ArtifactStore) -> int:
    """Read every artifact with its checksum verified; returns how many there are."""
    keys = store.keys()
    for k in keys:
        store.get(k)
    return len(keys)


def mtimes(root: str | Path) -> dict[str, int]:
    """mtime_ns of every artifact record (an atomic rewrite would change it)."""
    return {str(p): p.stat().st_mtime_ns for p in Path(root).rglob("*.json")}


def cli(*args: str, env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
    """Start `raytda ...` in a subprocess (its own process group, for clean kills)."""
    return subprocess.Popen([sys.executable, "-m", "raytda.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})}, start_new_session=True, **kw)


class KillOnPut(ArtifactStore):
    """A store whose first ``put`` of an artifact of ``kind`` kills the worker process
    right before saving (after computing), once per ``marker``: the fault a preempted or
    OOM-killed worker causes. ``marker`` records the artifacts finished at that moment."""

    def __init__(self, uri: str, kind: str, marker: str) -> None:
        super().__init__(uri)
        self.kind, self.marker = kind, marker

    def __reduce__(self):
        return (type(self), (self.uri, self.kind, self.marker))

    def put(self, key: str, *a, **kw) -> None:
        if key.startswith(self.kind + "-") and self._claim():
            import pyarrow.fs as pafs

            sel = pafs.FileSelector(self.root, recursive=True, allow_not_found=True)
            finished = {i.path: i.mtime_ns for i in self.fs.get_file_info(sel)
                        if i.type == pafs.FileType.File and i.path.endswith(".json")}
            with open(self.marker, "w") as f:
                json.dump({"killed_in": key, "pid": os.getpid(), "finished": finished}, f)
            os.kill(os.getpid(), signal.SIGKILL)
        super().put(key, *a, **kw)

    def _claim(self) -> bool:
        try:
            os.close(os.open(self.marker + ".claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return True
        except FileExistsError:
            return False


class KillOnSecondPut(KillOnPut):
    """As :class:`KillOnPut`, but the process is killed at its second ``put`` of an
    artifact of ``kind`` (once per ``marker``): a pack trained in sub-packs loses its
    actor after its first member was stored."""

    def put(self, key: str, *a, **kw) -> None:
        if key.startswith(self.kind + "-"):
            first = f"{self.marker}.{os.getpid()}"
            if not os.path.exists(first):
                open(first, "w").close()
                ArtifactStore.put(self, key, *a, **kw)
                return
        super().put(key, *a, **kw)


def ship_by_value(*modules) -> None:
    """Let Ray workers unpickle classes defined in test modules (not importable there)."""
    from ray import cloudpickle

    for m in modules:
        cloudpickle.register_pickle_by_value(m)


def write_fake_mnist(root: Path, n_train: int = 40, n_test: int = 10) -> Path:
    """The four MNIST IDX files with random pixels and labels under ``root`` (a task that
    reads its data from a directory, at a size that trains in a second)."""
    import numpy as np

    from raytda.data.mnist import FILES

    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, size=(n_train, 28, 28)),
              "y_train": rng.integers(0, 10, size=n_train),
              "x_test": rng.integers(0, 256, size=(n_test, 28, 28)),
              "y_test": rng.integers(0, 10, size=n_test)}
    root.mkdir(parents=True, exist_ok=True)
    for key, stem in FILES.items():
        arr = arrays[key]
        # IDX: 0x00 0x00, type 0x08 (uint8), ndim, big-endian dims, then the bytes.
        header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big")
                                                          for d in arr.shape)
        (root / stem).write_bytes(header + arr.astype(np.uint8).tobytes())
    return root


def ray_workers_cwd(ray) -> Path:
    """The working directory of the Ray runtime's workers (that of the process that started
    it), where a relative path sent to them would land."""
    def cwd() -> str:
        return os.getcwd()

    return Path(ray.get(ray.remote(num_cpus=0)(cwd).remote()))
