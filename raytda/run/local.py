"""The in-process executor: runs a plan's jobs one after another in this process, sharing
the store's work with any other sweep running on it.

It keeps the Ray executor's contract, only the placement differs: the same job graph
(:class:`~raytda.run.job_graph.JobGraph`), the same attempt
(:func:`~raytda.run.attempt.attempt`, through the same
:class:`~raytda.run.worker.JobRunner`: torch threads equal the job's CPU reservation, and
each artifact records what it was measured on, so costs measured here and on Ray mean the
same) and the same recovery (:class:`~raytda.run.recovery.Recovery`: a bad input is
rebuilt, a failed job blocks its dependents while independent jobs go on, and the sweep
raises one line at the end).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import replace

from raytda.core.args import ComputeArgs
from raytda.plan.packs import TrainPack, gather_pack
from raytda.plan.planner import Plan
from raytda.run.attempt import attempt
from raytda.run.eta import UnitCostETA
from raytda.run.job_graph import JobGraph
from raytda.run.progress import JobCounts, Progress, job_label, open_progress, packed_note
from raytda.run.recovery import Recovery, failure_cause
from raytda.run.worker import JobRunner
from raytda.store import ArtifactStore, StoreError
from raytda.store.lease import POLL_S

log = logging.getLogger(__name__)


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
        """Run every job in ``plan.todo`` that no concurrent sweep builds; raise
        :class:`JobFailed` at the end if some could not be."""
        if not plan.todo:
            return
        graph = JobGraph(plan.todo, plan.jobs, plan.cached, store)
        recovery = Recovery(graph, Counter(), max_retries=0)
        cached = len(plan.jobs) - len(plan.todo)
        counts = JobCounts(total=graph.added + cached, done=cached, cached=cached)
        eta = UnitCostETA(plan.todo)
        progress = open_progress(counts, self.progress, eta=eta)
        log.info("%d jobs to run (%d cached) in this process", graph.added, cached)
        told: set[str] = set()  # jobs whose other holder has been logged
        try:
            while graph.pending:
                status = self._run_next(graph, store, progress, counts, eta, recovery)
                if status is None:
                    # Every ready job is another sweep's: wait for one to appear (or for
                    # its holder to die, and take it over).
                    for key in graph.ready:
                        if key not in told:
                            told.add(key)
                            log.info("waiting for %s: another sweep is computing it",
                                     job_label(graph.jobs[key]))
                    time.sleep(self.poll_s)
                    continue
                counts = replace(counts, done=graph.finished + cached,
                                 cached=counts.cached + (status == "cached"),
                                 failed=len(graph.failed))
                progress.update(counts)
        except Exception:  # an interrupt is not a job's failure
            counts = replace(counts, failed=counts.failed + 1)
            progress.update(counts)
            raise
        finally:
            progress.close()
        failed = recovery.failure()
        if failed is not None:
            raise failed from recovery.first_error

    def _run_next(self, graph: JobGraph, store: ArtifactStore, progress: Progress,
                  counts: JobCounts, eta: UnitCostETA, recovery: Recovery) -> str | None:
        """Attempt the oldest ready job nobody else holds and hand the answer to the
        recovery: its status (``"failed"`` if it raised), or None if another sweep holds
        every ready job."""
        share = 1.0 if self.args.device.startswith("cuda") else 0.0  # the whole device
        for job in list(graph.ready_jobs()):
            pack = gather_pack(job, graph.ready_jobs(), store, self.args.pack_limit)
            if pack is not None:
                status = self._run_pack(pack, store, progress, counts, eta, recovery, share)
                if status != "leased":  # else: its members one by one, as any job
                    return status
            label = job_label(job)
            progress.update(replace(counts, running=1), [label])
            t0 = time.perf_counter()
            eta.started(job)
            try:
                out = attempt(job, store, self.args, share, self.runner, wait=False)
            except Exception as e:  # an interrupt is not the job's failure
                eta.stopped(job.key, measured=False)
                if isinstance(e, StoreError):
                    raise  # full or gone: the store's own line says what to do
                # The user gets one line naming the job and the cause; the traceback
                # goes to the log (and stays chained for a caller of the Python API).
                log.debug("%s failed", job.describe(), exc_info=True)
                recovery.job_raised(job.key, e, "this process", failure_cause(e))
                return "failed"
            status = out["status"]
            eta.stopped(job.key, settled=status in ("ran", "cached"),
                        measured=status == "ran")
            recovery.answer(job.key, out)
            if status == "leased":
                continue  # another sweep computes it; its artifact is looked for later
            if status == "ran":
                log.info("ran %s in %.1f s", label, time.perf_counter() - t0)
            elif status == "cached":
                log.info("%s was built by another sweep", label)
            return status
        return None

    def _run_pack(self, pack: TrainPack, store: ArtifactStore, progress: Progress,
                  counts: JobCounts, eta: UnitCostETA, recovery: Recovery,
                  share: float) -> str:
        """One attempt at a pack; its answer is each member's (the same recovery)."""
        progress.update(replace(counts, running=len(pack.members)), [job_label(pack)])
        t0 = time.perf_counter()
        try:
            out = attempt(pack, store, self.args, share, self.runner, wait=False)
        except Exception as e:
            if isinstance(e, StoreError):
                raise
            log.debug("%s failed", pack.describe(), exc_info=True)
            for m in pack.members:
                recovery.job_raised(m.key, e, "this process", failure_cause(e))
            return "failed"
        status = out["status"]
        for m in pack.members:
            eta.stopped(m.key, settled=Recovery.member_status(out, m.key) in ("ran", "cached"),
                        measured=False)
        # members another sweep holds go back to the queue; the rest are done
        recovery.answer_all([m.key for m in pack.members], out)
        if status == "leased":
            return "leased"  # nothing ran: every member is built or another sweep's
        if status == "ran":  # a record per member that ran, as for a job alone
            wall = time.perf_counter() - t0
            for m in pack.members:
                if Recovery.member_status(out, m.key) == "ran":
                    log.info("ran %s in %.1f s%s", job_label(m), wall,
                             packed_note(len(pack.members)))
        return status
