"""What an executor does when a job did not simply finish, cheapest remedy first: the
same for the in-process and the Ray executor (only where an attempt runs differs; an
attempt's answer is :func:`raytda.run.attempt.attempt`'s).

* Its actor died for good (node removed, restarts used up): the job did nothing wrong,
  so it is requeued for another actor, up to ``max_retries`` times. (An actor process
  that dies is first restarted by Ray itself, and the job retried there: Ray's
  ``max_restarts`` / ``max_task_retries``, set by the pool; transient ``OSError``\\ s are
  retried in place by ``retry_exceptions``.)
* It ran out of CUDA memory on a GPU share: it runs again, alone, on an actor with twice
  the share, up to a whole GPU, before it fails.
* One of its inputs is truncated, corrupt or gone: the producer is rebuilt (recursively,
  at most three times per input), then the job runs again.
* The store is full or gone: the sweep stops with the worker's one line (every other job
  would fail the same way; no traceback, no retry).
* Anything else: the job fails, its dependents are blocked, the worker's traceback is
  logged here (debug level), and independent jobs go on; the sweep raises at the end,
  one line naming the first failed job and its cause.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from raytda.errors import RaytdaError
from raytda.run.job_graph import JobGraph
from raytda.run.progress import job_label
from raytda.store import StoreError

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

#: rebuilds of one input before its consumers fail
MAX_REPAIRS = 3


class Recovery:
    """Retries, repairs and failures of one ``execute`` call; counts go to ``stats``."""

    def __init__(self, graph: JobGraph, stats: Counter[str], max_retries: int) -> None:
        self.graph, self.stats, self.max_retries = graph, stats, max_retries
        self.requeues: Counter[str] = Counter()  # job -> times its actor died under it
        self.repairs: Counter[str] = Counter()  # input -> times it was rebuilt
        self.bigger: dict[str, float] = {}  # job -> GPU share it retries on after an OOM
        self.first_error: BaseException | None = None  # chained to the sweep's JobFailed

    def fail(self, key: str, why: str) -> None:
        self.graph.fail(key, why)
        self.stats["failed"] += 1

    def actor_lost(self, key: str, error: BaseException) -> None:
        """``key``'s actor is gone for good: requeue it, or fail it after too many."""
        self.requeues[key] += 1
        if self.requeues[key] > self.max_retries:
            self.fail(key, f"its actor died {self.requeues[key]} times: {error}")
            return
        log.warning("the actor running %s is gone; requeued",
                    job_label(self.graph.jobs[key]))
        self.stats["requeued"] += 1
        self.graph.requeue(key)

    def job_raised(self, key: str, error: BaseException, actor: str,
                   cause: str | None = None) -> None:
        """The job raised on its actor (or in this process): it fails, its dependents are
        blocked, independent jobs go on. ``cause``: the one line to show (default the
        error's last line: a remote error's is the original exception's)."""
        if isinstance(error, StoreError):
            # The store is full or gone: every other job would fail the same way.
            cause = getattr(error, "cause", None) or error
            raise StoreError(str(cause).strip().splitlines()[0]) from None
        if self.first_error is None:
            self.first_error = error
        if cause is None:
            msg = str(error).strip().splitlines()
            cause = msg[-1] if msg else error.__class__.__name__
        self.fail(key, cause)
        # The worker's traceback, on the driver's log at debug level (and so in `ray job
        # logs` with --log-level debug): the user's line is the sweep's JobFailed.
        log.debug("%s failed on %s:\n%s", self.graph.jobs[key].describe(), actor, error)

    def out_of_memory(self, key: str, share: float, why: str) -> None:
        """CUDA OOM on ``share`` of a GPU: retry on twice the share, up to a whole one."""
        if share >= 1.0:
            self.fail(key, f"CUDA out of memory on a whole GPU: {why}")
            return
        new = min(1.0, 2 * share)
        log.warning("%s ran out of memory on %g of a GPU; retrying on %g",
                    job_label(self.graph.jobs[key]), share, new)
        self.bigger[key] = new
        self.graph.requeue(key)

    def succeeded(self, key: str) -> None:
        self.bigger.pop(key, None)

    def answer(self, key: str, out: dict[str, Any]) -> str:
        """What an attempt's answer (``attempt``'s dict) means for the graph: done
        (``"ran"``, ``"cached"``), back in the queue while another sweep computes it
        (``"leased"``), a retry on a larger GPU share (``"oom"``) or an input rebuilt
        first (``"missing"``, ``"corrupt"``). Returns the status."""
        status = out["status"]
        if status in ("ran", "cached"):
            self.succeeded(key)
            self.graph.finish(key)
        elif status == "leased":
            self.graph.requeue(key)
        elif status == "oom":
            self.out_of_memory(key, float(out.get("share") or 1.0), str(out.get("why")))
        else:
            self.bad_input(key, out["key"], "missing" if status == "missing" else "corrupt")
        return status

    @staticmethod
    def member_status(out: dict[str, Any], key: str) -> str:
        """Job ``key``'s own status in an attempt's answer: the member's, for a pack that
        leased its members one by one (``out["members"]``), else the attempt's."""
        return (out.get("members") or {}).get(key, out["status"])

    def answer_all(self, keys: list[str], out: dict[str, Any]) -> str:
        """One attempt's answer for every job it ran at once (a pack's members: one key
        unless packed), each as if it had run alone (its own status from the answer's
        ``members``: ran, built by another sweep, or leased by one). Returns the
        attempt's status."""
        status = out["status"]
        for key in keys:
            own = out if status in ("missing", "corrupt") or len(keys) == 1 \
                else {**out, "key": key, "status": self.member_status(out, key)}
            self.answer(key, own)
        return status

    def failure(self) -> JobFailed | None:
        """The sweep's error once nothing more can run, naming the first failed job and
        its cause on one line; None when nothing failed."""
        graph = self.graph
        if not graph.failed:
            return None
        key, why = next(iter(graph.failed.items()))
        line = f"job {job_label(graph.jobs[key])} failed: {why} ({TRACEBACK_HINT})"
        if len(graph.failed) > 1:
            line = f"{len(graph.failed)} jobs failed (or were blocked by one); first: {line}"
        return JobFailed(line)

    def bad_input(self, consumer: str, bad: str, why: str) -> None:
        """Input ``bad`` of ``consumer`` is ``why`` (missing, corrupt): rebuild it once
        however many consumers trip over it, then run the consumer again."""
        graph = self.graph
        graph.pending.discard(consumer)
        graph.done.discard(bad)
        if bad not in graph.pending:
            if graph.store.has(bad):  # rebuilt meanwhile (this or a concurrent sweep)
                graph.done.add(bad)
            else:
                producer = graph.producer(consumer, bad)
                self.repairs[bad] += 1
                if producer is None or self.repairs[bad] > MAX_REPAIRS:
                    self.fail(consumer, f"input {bad} is {why} and could not be rebuilt")
                    return
                log.warning("input %s of %s is %s; rebuilding it", bad,
                            job_label(graph.jobs[consumer]), why)
                self.stats["repaired"] += 1
                graph.want(producer)
        graph.requeue(consumer)
