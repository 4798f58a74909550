"""One attempt at one job, as every executor makes it: run it in a worker unless its
artifact exists, and report what happened instead of raising where the executor can do
something about it (an input to rebuild, a GPU share too small, another sweep's lease).
What the executor then does is :class:`~raytda.run.recovery.Recovery`'s, for both the
in-process and the Ray executor: they differ only in where an attempt runs.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from raytda.core.args import ComputeArgs
from raytda.plan.job import Job
from raytda.run.worker import JobRunner
from raytda.store import ArtifactStore, CorruptArtifact, StoreError
from raytda.store.artifacts import full_disk


def _is_cuda_oom(e: BaseException) -> bool:
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    return oom is not None and isinstance(e, oom)


def attempt(job: Job, store: ArtifactStore, args: ComputeArgs, gpu_share: float,
            runner: JobRunner | None = None, accel: str = "GPU",
            wait: bool = True) -> dict[str, Any]:
    """Run ``job`` in ``runner`` unless its artifact exists; the answer's ``status``:
    ``"ran"``, ``"cached"`` (there already, or built by another sweep meanwhile),
    ``"leased"`` (another live sweep holds it and ``wait`` is off: nothing computed),
    ``"missing"`` / ``"corrupt"`` (input ``key`` must be rebuilt first) or ``"oom"`` (a
    CUDA out-of-memory on ``gpu_share`` of a GPU). A job storing several artifacts (a
    pack) leases each; ``members`` then says each one's status (the answer's is
    ``"ran"`` if any ran, else ``"leased"`` if any is another sweep's, else
    ``"cached"``). Anything else the job raises is
    raised; a full disk as a :class:`StoreError`. ``args`` are the worker's own (its
    device as this process sees it)."""
    t0 = time.perf_counter()
    runner = runner or JobRunner("task")
    where = {"worker": runner.worker, "node_id": runner.node_id, "pid": os.getpid()}
    if store.has(job.key):  # built meanwhile by a concurrent sweep, or a retried attempt
        return {"status": "cached", "key": job.key, **where}
    for dep in job.deps():
        if not store.has(dep.key):  # has() also drops a truncated payload
            return {"status": "missing", "key": dep.key, **where}
    try:
        share = gpu_share if gpu_share > 0 else 0.0
        each: dict[str, str] | None = None
        if len(job.stored_jobs()) > 1:  # a pack: each member under its own lease
            each = runner.run_each(job, store, args, share, accel, wait)
            ran = next((s for s in ("ran", "leased") if s in each.values()), "cached")
        elif wait:
            ran = "ran" if runner.run(job, store, args, share, accel) else "cached"
        else:
            ran = runner.try_run(job, store, args, share, accel)
    except CorruptArtifact as e:
        if e.key == job.key:
            raise
        return {"status": "corrupt", "key": e.key, "why": str(e), **where}
    except KeyError:
        # Another consumer found an input corrupt and removed it after our check above.
        gone = next((d.key for d in job.deps() if not store.has(d.key)), None)
        if gone is None:
            raise
        return {"status": "missing", "key": gone, **where}
    except StoreError:
        raise
    except Exception as e:
        full = full_disk(e)
        if full is not None:
            raise StoreError(f"disk full on node {runner.node_id[:8]} "
                             f"({os.strerror(full.errno)}) while running {job.describe()}; "
                             f"free space") from None
        if not _is_cuda_oom(e):
            raise
        import torch

        torch.cuda.empty_cache()  # the process lives on; leave its share clean
        return {"status": "oom", "key": job.key, "share": gpu_share,
                "why": str(e).strip().splitlines()[0] if str(e).strip() else "CUDA OOM", **where}
    members = {} if each is None else {"members": each}
    if ran != "ran":  # another sweep holds its lease, or held it and built it
        return {"status": ran, "key": job.key, **members, **where}
    return {"status": "ran", "key": job.key, "seconds": time.perf_counter() - t0,
            "loads": runner.loads(), **members, **where}
