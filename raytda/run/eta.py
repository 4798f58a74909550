"""Time left of a run, from the measured cost of each class of job.

A sweep's jobs differ in cost by orders of magnitude (a training of a small model takes
seconds, a member's projected per-sample gradients may take minutes), and they run in
dependency order: the trainings first, the feature blocks later. Extrapolating the
fraction of jobs done therefore promises far too little early on. Instead:

- each job belongs to a class (its ``work_class``: jobs of equal work shape; else its
  kind), and a class's unit cost is the mean measured duration of its finished jobs;
- a class not measured yet is charged its jobs' analytic work (:func:`analytic_work`, in
  sample passes) times the seconds per unit of analytic work measured on finished jobs of
  its kind (a masked feature block after an unmasked one), else of every kind (the
  analytic work underrates a feature block's projection against a training's passes,
  so this is the roughest part of the estimate);
- a running job is charged what its class costs less what it has run already;
- the sum is divided by the concurrency measured so far (busy job-seconds per wall second),
  so a Ray cluster running several jobs at once gets a shorter ETA than one process.

Durations are the driver's wall time from a job's dispatch to its answer, on the clock
given (``time.monotonic``; tests pass a fake one).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from raytda.plan.job import Job


def job_class(job: Job) -> str:
    """The class whose measured unit cost stands for ``job``: jobs of one work shape, or
    jobs of one kind and task where the job has no work shape (evaluation, imports)."""
    task = getattr(job, "task", None)  # a job class of one's own may have none
    members = getattr(job, "member_count", None)
    # an evaluation's work grows with its ensemble's members: one class per size
    size = "" if members is None else f"-{members}m"
    return job.work_class or f"{job.kind}-{getattr(task, 'name', '')}{size}"


def task_sizes(job: Job) -> tuple[int, int] | None:
    """(n_train, n_test) of the job's task, or None where its data cannot be read here
    (a driver without the cluster's data): then the job's work is unknown."""
    try:
        data = job.task.data()  # loaded once per process (raytda.tasks.cache)
        return int(data.n_train), int(data.n_test)
    except Exception:  # any failure only means no analytic estimate for this job
        return None


def analytic_work(job: Job) -> float | None:
    """A job's work in sample passes, as the job declares it
    (:meth:`raytda.plan.job.Job.analytic_work`); None where it or the sizes are unknown.
    Only ratios between jobs matter (see the module docstring)."""
    sizes = task_sizes(job)
    try:
        return None if sizes is None else job.analytic_work(*sizes)
    except Exception:  # a job class of one's own that cannot say: no estimate, no failure
        return None


class UnitCostETA:
    """Time left of a set of jobs, from measured unit costs per job class.

    The executor says when a job starts (:meth:`started`) and stops (:meth:`stopped`);
    :meth:`seconds_left` is the estimate, None until a job has finished.

    Args:
        jobs: the jobs to run (a plan's ``todo``); more are added as they start.
        clock: seconds, monotonic.
        work: a job's analytic work (:func:`analytic_work`), for classes not measured yet.
    """

    def __init__(self, jobs: Iterable[Job], clock: Callable[[], float] = time.monotonic,
                 work: Callable[[Job], float | None] = analytic_work) -> None:
        self._clock, self._work = clock, work
        self._t0 = clock()
        self._class: dict[str, str] = {}
        self._prior: dict[str, float | None] = {}
        self._left: set[str] = set()
        self._running: dict[str, float] = {}  # key -> start time
        self._durations: dict[str, list[float]] = defaultdict(list)  # class -> seconds
        self._kind: dict[str, str] = {}
        # analytic work and seconds of the measured jobs that have an analytic work, per
        # kind and over all kinds ("")
        self._measured_work: dict[str, float] = defaultdict(float)
        self._measured_seconds: dict[str, float] = defaultdict(float)
        self._busy = 0.0  # job-seconds of finished jobs
        # the executor's thread records, a progress timer thread reads
        self._lock = threading.RLock()
        for job in jobs:
            self.add(job)

    def add(self, job: Job) -> None:
        """Count ``job`` among those left (a job added to the run, e.g. a rebuild)."""
        with self._lock:
            if job.key not in self._class:
                self._class[job.key] = job_class(job)
                self._kind[job.key] = job.kind
                self._prior[job.key] = self._work(job)
            self._left.add(job.key)

    def started(self, job: Job) -> None:
        """``job`` was dispatched now."""
        with self._lock:
            self.add(job)
            self._running[job.key] = self._clock()

    def stopped(self, key: str, settled: bool = True, measured: bool = True) -> None:
        """Job ``key`` answered: ``settled`` when it will not run again (done, cached or
        failed for good); ``measured`` when its duration is its work's (it ran; not when
        it was found cached or failed)."""
        with self._lock:
            start = self._running.pop(key, None)
            if settled:
                self._left.discard(key)
            if start is None:
                return
            seconds = max(0.0, self._clock() - start)
            self._busy += seconds
            if measured and settled:
                self._durations[self._class[key]].append(seconds)
                prior = self._prior.get(key)
                if prior:
                    for group in (self._kind[key], ""):
                        self._measured_work[group] += prior
                        self._measured_seconds[group] += seconds

    def expected(self, key: str) -> float | None:
        """What job ``key`` costs alone: its class's measured mean, else its analytic work
        at the seconds per unit of work measured on its kind (else on every kind), else
        the mean over every measured job."""
        with self._lock:
            return self._expected(key)

    def _expected(self, key: str) -> float | None:
        seen = self._durations.get(self._class[key])
        if seen:
            return sum(seen) / len(seen)
        prior = self._prior.get(key)
        if prior:
            # the seconds per unit of work of its own kind (another feature block, say a
            # masked one), else of every kind
            for group in (self._kind[key], ""):
                if self._measured_work.get(group, 0.0) > 0:
                    return prior * self._measured_seconds[group] / self._measured_work[group]
        every = [s for durations in self._durations.values() for s in durations]
        return sum(every) / len(every) if every else None

    def seconds_left(self) -> float | None:
        """Wall seconds until every job left has run; None before any job finished."""
        with self._lock:
            if not self._left:
                return 0.0
            if not self._durations:
                return None
            now = self._clock()
            work = 0.0
            for key in self._left:
                cost = self._expected(key) or 0.0
                if key in self._running:  # what it still has to run, as far as one can tell
                    cost = max(0.0, cost - (now - self._running[key]))
                work += cost
            busy = self._busy + sum(now - t for t in self._running.values())
            wall = now - self._t0
            # Jobs at once, as measured; at least one (a single process that sat idle
            # between jobs would otherwise stretch the estimate).
            concurrency = max(1.0, busy / wall) if wall > 0 else 1.0
            return work / concurrency
