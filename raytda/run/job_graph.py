"""The driver's view of a plan's DAG: which jobs wait, which are ready, which settled.

A job enters the graph once (:meth:`JobGraph.want`, which also pulls in any input that is
neither in the store nor wanted yet) and leaves it as finished or failed. A job is ready
once every input it waits for has finished; a failed job fails its dependents with it
(``blocked``), while independent jobs go on. Requeueing a job (its actor died, it needs
a larger GPU share, an input has to be rebuilt first) puts it back as if new.

Pure bookkeeping: no Ray, no I/O beyond asking the store whether an input exists.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

from raytda.plan.job import Job
from raytda.store import ArtifactStore


class JobGraph:
    """Jobs of one ``execute`` call: waiting, ready, running, finished or failed.

    Args:
        todo: the jobs to run, dependencies first or not.
        known: every job of the plan, by key (for producers of inputs found bad later).
        done: keys whose artifacts exist (the plan's cached ones).
        store: asked whether an input that is not wanted yet already exists.
    """

    def __init__(self, todo: Iterable[Job], known: Iterable[Job], done: Iterable[str],
                 store: ArtifactStore) -> None:
        self.store = store
        self.jobs: dict[str, Job] = {j.key: j for j in known}
        self.done: set[str] = set(done)
        self.pending: set[str] = set()  # waiting, ready or running
        self.waiting: dict[str, set[str]] = {}  # job -> inputs it still waits for
        self.dependents: dict[str, set[str]] = {}  # input -> jobs that wait for it
        self.ready: deque[str] = deque()
        self.running: set[str] = set()
        self.failed: dict[str, str] = {}  # job -> why
        self.added = 0  # jobs ever queued (a requeue is not a new one)
        self.finished = 0  # jobs that finished in this run
        for job in todo:
            self.want(job)

    def want(self, job: Job) -> None:
        """Queue ``job`` (and, recursively, whatever input of it is missing)."""
        key = job.key
        if key in self.pending:
            return
        self.jobs[key] = job
        self.done.discard(key)
        deps: set[str] = set()
        for dep in job.deps():
            if dep.key in self.done:
                continue
            if dep.key not in self.pending:
                if self.store.has(dep.key):
                    self.done.add(dep.key)
                    continue
                self.want(dep)
            deps.add(dep.key)
        self.pending.add(key)
        self.added += 1
        self.waiting[key] = deps
        for d in deps:
            self.dependents.setdefault(d, set()).add(key)
        if not deps:
            self.ready.append(key)

    def ready_jobs(self) -> Iterator[Job]:
        """The ready jobs, oldest first (dropping stale entries on the way)."""
        for key in list(self.ready):
            if key not in self.pending or key in self.running:
                self.ready.remove(key)
                continue
            yield self.jobs[key]

    def is_ready(self, key: str) -> bool:
        return key in self.ready and key in self.pending and key not in self.running

    def start(self, key: str) -> None:
        """``key`` was handed to an actor."""
        self.ready.remove(key)
        self.running.add(key)

    def stopped(self, key: str) -> None:
        """``key``'s actor answered (or died); what it means is decided next."""
        self.running.discard(key)

    def finish(self, key: str) -> None:
        """``key``'s artifact exists: its dependents may be ready now."""
        self.finished += 1
        self.pending.discard(key)
        self.done.add(key)
        for c in sorted(self.dependents.pop(key, ())):
            w = self.waiting.get(c)
            if w is not None and key in w:
                w.discard(key)
                if not w and c in self.pending:
                    self.ready.append(c)

    def fail(self, key: str, why: str) -> list[str]:
        """``key`` failed for good; its dependents are blocked. Returns every job that
        failed by it, ``key`` first."""
        out: list[str] = []
        stack = [(key, why)]
        while stack:
            k, w = stack.pop()
            if k in self.failed:
                continue
            self.failed[k] = w
            out.append(k)
            self.pending.discard(k)
            self.waiting.pop(k, None)
            for c in self.dependents.pop(k, ()):
                stack.append((c, f"blocked: input {k} failed"))
        return out

    def requeue(self, key: str) -> None:
        """Run ``key`` again, after whatever it now waits for."""
        self.added -= 1  # counted when first queued
        self.pending.discard(key)
        self.want(self.jobs[key])

    def producer(self, consumer: str, key: str) -> Job | None:
        """The job that makes input ``key`` of ``consumer``."""
        return self.jobs.get(key) or next(
            (d for d in self.jobs[consumer].deps() if d.key == key), None)

    @property
    def settled(self) -> int:
        """Jobs of this run that finished or failed."""
        return self.finished + len(self.failed)
