"""What a plan will cost before it runs: disk from artifact shapes, time from what this
store has measured.

Disk: each job to run is charged the bytes of what it stores, from the shapes the
task and method imply (model weights per saved checkpoint, a TRAK member's projected
features and kernel factor, a block of n_test x n_train scores, ...) plus its JSON
record; where the plan has a finished job of the same class (:func:`raytda.run.eta.job_class`)
in the store, that job's recorded payload size is used instead.

Time: a job class with finished jobs in the store is charged their recorded cost
(training or serving seconds); the other classes get the analytic work of
:func:`raytda.run.eta.analytic_work` at the seconds per unit of work those measured jobs
show. With nothing measured in this store, the time is unknown until the first jobs
finish, and the progress line's ETA (measured unit costs) says it from then on.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from raytda.run.eta import analytic_work, job_class, task_sizes

if TYPE_CHECKING:
    from raytda.plan.job import Job
    from raytda.plan.planner import Plan
    from raytda.store import ArtifactStore
    from raytda.task import Task

# Bytes a JSON record adds to its job's spec (key, digests, costs in meta): 615 to 1667,
# mean 820, over the 24 records of a toy-mlp sweep (3 configurations) measured here.
_RECORD_EXTRA = 800


@dataclass(frozen=True)
class Estimate:
    """A plan's cost before it runs: jobs to run by kind, bytes they will store, and the
    seconds they will take (None where nothing comparable was measured)."""

    jobs: dict[str, int]
    disk_bytes: int
    seconds: float | None
    measured_classes: int  # job classes to run whose time comes from this store

    def line(self) -> str:
        """One line for a person, e.g. ``to run: 61 jobs (11 model, ...); about 1.2 GB
        on disk; about 6m10s``."""
        from raytda.run.progress import format_duration

        n = sum(self.jobs.values())
        if n == 0:
            return "nothing to run: the store has every artifact of this sweep"
        kinds = ", ".join(f"{c} {k}" for k, c in sorted(self.jobs.items()))
        time = ("time known once jobs like these are timed (the ETA)" if self.seconds is None
                else "under a second of compute" if self.seconds < 1
                else f"about {format_duration(self.seconds)} of compute")
        return (f"to run: {n} jobs ({kinds}); about {format_bytes(self.disk_bytes)} "
                f"on disk; {time}")


def format_bytes(n: float) -> str:
    """``1234567`` -> ``"1.2 MB"`` (powers of 1000, as ``du --si`` and disks count)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def model_bytes(task: Task) -> int | None:
    """Bytes of the task's model weights (its state dict), built on the meta device so
    that no memory is taken; None where the model cannot be built that way."""
    import torch

    try:
        with torch.device("meta"):
            model = task.build_model()
        return int(sum(t.numel() * t.element_size() for t in model.state_dict().values()))
    except Exception:  # a model that cannot be built on meta: no estimate, not an error
        return None


def payload_bytes(job: Job, weights: dict[str, int | None]) -> int | None:
    """Bytes of what ``job`` stores, as the job declares them from the data's sizes
    (:meth:`raytda.plan.job.Job.stored_bytes`); None where they are unknown. ``weights``
    memoizes each task's model size (built once on the meta device)."""
    sizes = task_sizes(job)
    if sizes is None:
        return None
    task = job.task

    def weights_of_task() -> int | None:
        if task.train_key not in weights:
            weights[task.train_key] = model_bytes(task)
        return weights[task.train_key]

    try:
        return job.stored_bytes(*sizes, weights_of_task)
    except Exception:  # a job class of one's own that cannot say: no estimate, no failure
        return None


def _recorded_seconds(record: dict[str, Any], job: Job) -> float | None:
    """The job's own measured seconds from its record; None where its record's costs are
    not its own (an evaluation's hold its configuration's)."""
    if not job.records_own_cost:
        return None
    meta = record.get("meta") or {}
    for field in (job.cost_field, "train_time_s", "serve_time_s"):
        value = meta.get(field)
        if isinstance(value, (int, float)):
            return float(value)
    return None


def estimate(plan: Plan, store: ArtifactStore) -> Estimate:
    """What running ``plan`` against ``store`` will cost (see the module docstring)."""
    todo = plan.todo
    # What this store measured: cached jobs of the plan, by class.
    seconds_by_class: dict[str, list[float]] = defaultdict(list)
    bytes_by_class: dict[str, list[int]] = defaultdict(list)
    work_done, seconds_done = 0.0, 0.0
    for job in plan.jobs:
        if job.key not in plan.cached:
            continue
        record = store.record(job.key)
        if record is None:
            continue
        cls = job_class(job)
        bytes_by_class[cls].append(int(record.get("bytes") or 0))
        seconds = _recorded_seconds(record, job)
        if seconds is not None:
            seconds_by_class[cls].append(seconds)
            work = analytic_work(job)
            if work:
                work_done += work
                seconds_done += seconds
    weights: dict[str, int | None] = {}
    disk = 0
    total_seconds: float | None = 0.0
    measured = set()
    for job in todo:
        cls = job_class(job)
        stored = bytes_by_class.get(cls)
        size = (sum(stored) / len(stored) if stored else payload_bytes(job, weights)) or 0
        disk += (int(size) + len(json.dumps(job.spec(), default=str))
                 + job.artifacts_written * _RECORD_EXTRA)
        if total_seconds is None:
            continue
        timed = seconds_by_class.get(cls)
        if timed:
            measured.add(cls)
            total_seconds += sum(timed) / len(timed)
            continue
        work = analytic_work(job)
        if work and work_done > 0:
            total_seconds += work * seconds_done / work_done
        else:
            total_seconds = None
    return Estimate(dict(Counter(j.kind for j in todo)), disk, total_seconds, len(measured))
