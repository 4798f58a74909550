"""A node's timing slot: a costed job is timed alone, whatever else its node runs.

A configuration's costs mean "this work alone on these resources". Two actors serving at
once on one node share its memory bandwidth, caches and (on SMT machines) cores, so each
one's wall time is inflated by the other: measured here, Ray's serving times ran 1.24 to
1.35x the in-process ones for the same work on a 2-CPU node, and the Pareto frontier a
Ray sweep drew was not the one an in-process sweep drew.

So every job takes its node's slot while it runs: a job whose measured time is a cost
(``Job.costed``: ensemble trainings, Q, feature blocks, aggregation) takes it
exclusively, and work that no configuration is charged for (the LDS ground-truth
trainings) takes it shared, so those still run side by side on every actor of the node.
Nodes do not share a slot: a cluster still times many costed jobs at once, one per node.

Costed jobs of one *work class* (``Job.work_class``: the same work for another member,
e.g. the feature block of model 2 after that of model 1) need not wait for each other:
once one of them has run alone on a node (its calibration), the others of its class run
there side by side, holding the slot shared, and each is charged the smaller of its own
time and the calibration's (both bound the alone cost from above; its own co-scheduled
time is kept as ``measured_<field>``, with the ratio ``cost_scale``). Only the Ray
executor co-schedules (:class:`Timing`); in-process every costed job runs alone.

The slot is an advisory ``flock`` on one file per node (``$RAYTDA_TIMING_SLOT``, else
``raytda-timing-slot.lock`` in the temp directory): the kernel releases it when its
holder's process dies, so a killed actor never blocks the node. Two sweeps on one node
share it too, which is what keeps the second one's costs honest. Processes that do not
share a temp directory (separate containers on one host) do not share a slot: point
``RAYTDA_TIMING_SLOT`` at a shared path there.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

ENV = "RAYTDA_TIMING_SLOT"

#: recorded in a costed artifact's meta as ``timing``
ALONE = "alone on its node"
SHARED = "beside other work"
CALIBRATED = "beside its class, charged at most its class's alone run"


@dataclass(frozen=True)
class Timing:
    """How a job is timed on its node: ``exclusive`` (it holds the slot alone), and for a
    costed job run beside others, ``calibration``: the key of the alone run of its work
    class whose cost it is charged."""

    exclusive: bool
    calibration: str | None = None

    @classmethod
    def default(cls, costed: bool) -> Timing:
        """Alone when costed, shared otherwise (the in-process executor's rule)."""
        return cls(exclusive=costed)


def slot_path() -> str:
    return os.environ.get(ENV) or os.path.join(tempfile.gettempdir(), "raytda-timing-slot.lock")


def slot_free(exclusive: bool) -> bool:
    """Whether this node's slot could be taken now, exclusively or shared, without
    waiting (a look, not a hold: it may change the moment after)."""
    fd = os.open(slot_path(), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


@contextmanager
def timing_slot(exclusive: bool) -> Iterator[dict[str, float | str]]:
    """Hold this node's slot for the block: exclusively (a costed job) or shared.

    Yields what to record: ``timing`` (:data:`ALONE` or :data:`SHARED`) and ``slot_wait_s``
    (how long the job waited for the slot, which no cost includes)."""
    t0 = time.perf_counter()
    fd = os.open(slot_path(), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield {"timing": ALONE if exclusive else SHARED,
               "slot_wait_s": time.perf_counter() - t0}
    finally:
        os.close(fd)  # closing the descriptor releases the lock
