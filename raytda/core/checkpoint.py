"""safetensors checkpoints, written atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from raytda.errors import RaytdaError


class CheckpointError(RaytdaError, ValueError):
    """A checkpoint is unreadable or does not fit the model it is loaded into."""


def to_bytes(state: dict[str, torch.Tensor], meta: dict[str, str] | None = None) -> bytes:
    return st_save({k: v.contiguous() for k, v in state.items()}, metadata=meta)


def from_bytes(blob: bytes) -> dict[str, torch.Tensor]:
    try:
        return st_load(blob)
    except Exception as e:  # safetensors raises several types for bad headers
        raise CheckpointError(f"not a valid safetensors checkpoint: {e}") from e


def save_checkpoint(path: str | Path, state: dict[str, torch.Tensor]) -> None:
    """Write via a temp file and rename, so a crash never leaves half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(to_bytes(state))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    return from_bytes(path.read_bytes())
