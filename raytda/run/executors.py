"""Executors by name: the in-process one, the Ray one, or any object with ``execute``."""

from __future__ import annotations

from typing import Any

from raytda.core.args import ComputeArgs
from raytda.specs import SpecError


def make_executor(executor: Any, compute: ComputeArgs, address: str | None = None,
                  progress: bool = True):
    """'local' (in-process), 'ray' (local or joined cluster), or an executor object."""
    if executor == "local":
        from raytda.run.local import InProcessExecutor

        return InProcessExecutor(compute, progress)
    if executor == "ray":
        from raytda.run.ray_executor import RayExecutor

        return RayExecutor(compute, address=address, progress=progress)
    if hasattr(executor, "execute"):
        return executor
    raise SpecError(f"unknown executor {executor!r}; use 'local', 'ray' or an executor object")
