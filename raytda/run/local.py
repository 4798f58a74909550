"""The in-process executor: runs a plan's jobs one after another in this process.

Jobs run through the same :class:`~raytda.run.worker.JobRunner` as on Ray's actors: torch
threads equal the job's CPU reservation (1), and each artifact records what it was
measured on, so costs measured here and on Ray mean the same.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from raytda.core.args import ComputeArgs
from raytda.errors import RaytdaError
from raytda.plan.jobs import Job
from raytda.plan.planner import Plan
from raytda.run.eta import UnitCostETA
from raytda.run.progress import JobCounts, job_label, open_progress
from raytda.run.worker import JobRunner
from raytda.store import ArtifactStore, CorruptArtifact, StoreError

log = logging.getLogger(__name__)


class JobFailed(RaytdaError, RuntimeError):
    """Some jobs failed after their retries; everything else that could run has run."""


#: how a user sees a failed job's traceback (it goes to the log at debug level)
TRACEBACK_HINT = "--log-level debug shows the traceback"


def failure_cause(error: BaseException) -> str:
    """Why a job failed, on one line: a raytda error's own message (it says how to fix
    it), anything else's type and message."""
    text = " ".join(str(error).split())
    if isinstance(error, RaytdaError):
        return text or type(error).__name__
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def run_job_with_repair(job: Job, store: ArtifactStore, args: ComputeArgs,
                        by_key: dict[str, Job], depth: int = 0,
                        runner: JobRunner | None = None) -> None:
    """Run ``job``; if an input turns out corrupt, rebuild it and try again."""
    runner = runner or JobRunner()
    for _ in range(3):
        try:
            runner.run(job, store, args)
            return
        except CorruptArtifact as e:
            log.warning("%s; rebuilding it", e)
            producer = by_key.get(e.key) or next((d for d in job.deps() if d.key == e.key), None)
            if producer is None or depth > 8:
                raise
            run_job_with_repair(producer, store, args, by_key, depth + 1, runner)
    runner.run(job, store, args)


class InProcessExecutor:
    """Runs jobs serially in dependency order; for tests and small local sweeps.

    Args:
        args: how to compute (device, batch sizes, memory budget).
        progress: show progress (a bar on a terminal, timestamped lines in a log; see
            :mod:`raytda.run.progress`).
    """

    name = "local"

    def __init__(self, args: ComputeArgs | None = None, progress: bool = True) -> None:
        self.args = args or ComputeArgs()
        self.progress = progress
        self.runner = JobRunner("local")  # kept across plans: cached models, load counts

    def execute(self, plan: Plan, store: ArtifactStore) -> None:
        """Run every job in ``plan.todo``, in order; the first failure raises."""
        todo = plan.todo
        if not todo:
            return
        by_key = {j.key: j for j in plan.jobs}
        cached = len(plan.jobs) - len(todo)
        counts = JobCounts(total=len(plan.jobs), done=cached, cached=cached)
        eta = UnitCostETA(todo)
        progress = open_progress(counts, self.progress, eta=eta)
        log.info("%d jobs to run (%d cached) in this process", len(todo), cached)
        try:
            for job in todo:
                label = job_label(job)
                if store.has(job.key):  # built meanwhile by a concurrent sweep
                    eta.stopped(job.key, measured=False)
                    counts = replace(counts, done=counts.done + 1, cached=counts.cached + 1)
                    progress.update(counts)
                    continue
                eta.started(job)
                progress.update(replace(counts, running=1), [label])
                t0 = time.perf_counter()
                try:
                    run_job_with_repair(job, store, self.args, by_key, runner=self.runner)
                except Exception as e:  # an interrupt is not the job's failure
                    eta.stopped(job.key, measured=False)
                    counts = replace(counts, failed=counts.failed + 1)
                    progress.update(counts)
                    if isinstance(e, StoreError):
                        raise  # full or gone: the store's own line says what to do
                    # The user gets one line naming the job and the cause; the
                    # traceback goes to the log (and stays chained for a caller of the
                    # Python API).
                    log.debug("%s failed", job.describe(), exc_info=True)
                    raise JobFailed(f"job {job_label(job)} failed: {failure_cause(e)} "
                                    f"({TRACEBACK_HINT})") from e
                eta.stopped(job.key)
                log.info("ran %s in %.1f s", label, time.perf_counter() - t0)
                counts = replace(counts, done=counts.done + 1)
                progress.update(counts)
        finally:
            progress.close()
