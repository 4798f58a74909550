"""The Ray actor of the Ray executor: one job at a time in a long-lived worker process.

An actor (:class:`RaytdaWorker`, the class name the Ray dashboard and ``ray list actors``
show) keeps what its jobs load (the task's data, model weights, projections) for the next
job; :func:`run_on_actor` is the body of every job it runs. The driver side is
:mod:`raytda.run.ray_executor`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

from raytda.core.args import ComputeArgs
from raytda.plan.job import Job
from raytda.run.attempt import attempt
from raytda.run.logs import configure_logging
from raytda.run.policy import usable_cores
from raytda.run.worker import JobRunner, warm_up
from raytda.store import ArtifactStore

# Errors worth retrying in place: network filesystems, object stores, sockets. A full
# disk is not one of them: the store raises it as a StoreError (not an OSError), and
# run_on_actor turns any other ENOSPC / EDQUOT into one, so the driver stops the sweep.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OSError,)


_GPU_FRACTION_SET = False


def _worker_args(args: ComputeArgs, gpu_share: float) -> ComputeArgs:
    """The device a task really has: Ray hides other GPUs, so a granted one is 'cuda'."""
    global _GPU_FRACTION_SET
    if not args.device.startswith("cuda"):
        return args
    if gpu_share <= 0:
        return dataclasses.replace(args, device="cpu")
    if gpu_share < 1 and not _GPU_FRACTION_SET:
        import torch

        # A share of a GPU also means that share of its memory, so co-located actors
        # fail with a clear OOM of their own instead of starving each other.
        torch.cuda.set_per_process_memory_fraction(gpu_share, 0)
        _GPU_FRACTION_SET = True
    return dataclasses.replace(args, device="cuda")


def run_on_actor(job: Job, store: ArtifactStore, args: ComputeArgs, gpu_share: float,
                 runner: JobRunner | None = None, accel: str = "GPU",
                 wait: bool = True) -> dict[str, Any]:
    """One attempt (:func:`raytda.run.attempt.attempt`) on this actor, with the device
    its Ray reservation gives it."""
    return attempt(job, store, _worker_args(args, gpu_share), gpu_share, runner, accel, wait)


class RaytdaWorker:
    """A Ray actor that runs jobs one at a time and keeps what is expensive resident:
    task data (:mod:`raytda.tasks.cache`), model weights read from the store
    (:class:`~raytda.run.worker.JobRunner`), built projections
    (:mod:`raytda.core.projector_cache`), and warm torch/BLAS/CUDA state.

    It holds ``cpus`` CPUs (its torch thread count) and ``share`` of an accelerator
    (``accel``: Ray's ``GPU`` or a custom resource standing in for one) for its lifetime,
    so every job it runs is measured on exactly that reservation.
    """

    def __init__(self, name: str, share: float, accel: str,
                 log_level: int = logging.WARNING) -> None:
        import ray

        # At the driver's level: Ray forwards the actor's stderr to the driver's log.
        configure_logging(log_level)
        self.name, self.share, self.accel = name, share, accel
        self.runner = JobRunner(name, ray.get_runtime_context().get_node_id())
        warm_up()  # before the driver sees the actor ready, so no job pays for it
        self.runner._warm = True

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "node_id": self.runner.node_id, "pid": os.getpid(),
                "cores": usable_cores(), "loads": self.runner.loads()}

    def run(self, job: Job, store: ArtifactStore, args: ComputeArgs,
            wait: bool = True) -> dict[str, Any]:
        return run_on_actor(job, store, args, self.share, self.runner, self.accel, wait)

