"""The in-process executor: runs a plan's jobs one after another in this process, sharing
the store's work with any other sweep running on it.

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
from raytda.plan.job import Job
from raytda.plan.planner import Plan
from raytda.run.eta import UnitCostETA
from raytda.run.job_graph import JobGraph
from raytda.run.progress import JobCounts, Progress, job_label, open_progress
from raytda.run.worker import JobRunner
from raytda.store import ArtifactStore, CorruptArtifact, StoreError
from raytda.store.lease import POLL_S

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
                        runner: JobRunner | None = None, wait: bool = True) -> str:
    """Run ``job``; if an input turns out corrupt, rebuild it and try again.

    Returns :meth:`JobRunner.try_run`'s answer: ``"ran"``, ``"cached"`` (built by another
    sweep), or, only when not ``wait``-ing, ``"leased"`` (another sweep holds it now). An
    input being rebuilt is always waited for: the job needs it next."""
    runner = runner or JobRunner()

    def attempt() -> str:
        if wait:
            return "ran" if runner.run(job, store, args) else "cached"
        return runner.try_run(job, store, args)

    for _ in range(3):
        try:
            return attempt()
        except CorruptArtifact as e:
            log.warning("%s; rebuilding it", e)
            producer = by_key.get(e.key) or next((d for d in job.deps() if d.key == e.key), None)
            if producer is None or depth > 8:
                raise
            run_job_with_repair(producer, store, args, by_key, depth + 1, runner)
    return attempt()


class InProcessExecutor:
    """Runs jobs one at a time in dependency order; for tests and small local sweeps.

    Several sweeps may run on one store at once (processes on one machine, or machines
    sharing a filesystem): each runs the ready jobs (all inputs in the store) that no live
    sweep holds the lease of, puts aside those another sweep is computing, and counts them
    done when their artifacts appear. It waits only when every job it could run is held by
    another sweep; a job whose holder died or stopped renewing is taken over.

    Args:
        args: how to compute (device, batch sizes, memory budget).
        progress: show progress (a bar on a terminal, timestamped lines in a log; see
            :mod:`raytda.run.progress`).
        poll_s: how often to look again when every runnable job is another sweep's.
    """

    name = "local"

    def __init__(self, args: ComputeArgs | None = None, progress: bool = True,
                 poll_s: float = POLL_S) -> None:
        self.args = args or ComputeArgs()
        self.progress = progress
        self.poll_s = poll_s
        self.runner = JobRunner("local")  # kept across plans: cached models, load counts

    def execute(self, plan: Plan, store: ArtifactStore) -> None:
        """Run every job in ``plan.todo`` that no concurrent sweep builds; the first
        failure raises."""
        if not plan.todo:
            return
        graph = JobGraph(plan.todo, plan.jobs, plan.cached, store)
        cached = len(plan.jobs) - len(plan.todo)
        counts = JobCounts(total=graph.added + cached, done=cached, cached=cached)
        eta = UnitCostETA(plan.todo)
        progress = open_progress(counts, self.progress, eta=eta)
        log.info("%d jobs to run (%d cached) in this process", graph.added, cached)
        told: set[str] = set()  # jobs whose other holder has been logged
        try:
            while graph.pending:
                answer, job = self._run_next(graph, store, progress, counts, eta)
                if job is None:
                    # Every ready job is another sweep's: wait for one to appear (or for
                    # its holder to die, and take it over).
                    for key in graph.ready:
                        if key not in told:
                            told.add(key)
                            log.info("waiting for %s: another sweep is computing it",
                                     job_label(graph.jobs[key]))
                    time.sleep(self.poll_s)
                    continue
                graph.finish(job.key)
                counts = replace(counts, done=counts.done + 1,
                                 cached=counts.cached + (answer == "cached"))
                progress.update(counts)
        except Exception:  # an interrupt is not a job's failure
            counts = replace(counts, failed=counts.failed + 1)
            progress.update(counts)
            raise
        finally:
            progress.close()

    def _run_next(self, graph: JobGraph, store: ArtifactStore, progress: Progress,
                  counts: JobCounts, eta: UnitCostETA) -> tuple[str, Job | None]:
        """Run the oldest ready job nobody else holds: (``"ran"`` or ``"cached"``, it),
        or ("leased", None) if another sweep holds every ready job."""
        for job in list(graph.ready_jobs()):
            label = job_label(job)
            progress.update(replace(counts, running=1), [label])
            t0 = time.perf_counter()
            eta.started(job)
            try:
                answer = run_job_with_repair(job, store, self.args, graph.jobs,
                                             runner=self.runner, wait=False)
            except Exception as e:  # an interrupt is not the job's failure
                eta.stopped(job.key, measured=False)
                if isinstance(e, StoreError):
                    raise  # full or gone: the store's own line says what to do
                # The user gets one line naming the job and the cause; the traceback
                # goes to the log (and stays chained for a caller of the Python API).
                log.debug("%s failed", job.describe(), exc_info=True)
                raise JobFailed(f"job {label} failed: {failure_cause(e)} "
                                f"({TRACEBACK_HINT})") from e
            eta.stopped(job.key, settled=answer != "leased", measured=answer == "ran")
            if answer == "leased":
                continue  # another sweep computes it; its artifact is looked for later
            if answer == "ran":
                log.info("ran %s in %.1f s", label, time.perf_counter() - t0)
            else:
                log.info("%s was built by another sweep", label)
            return answer, job
        return "leased", None
