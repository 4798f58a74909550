"""Time left from measured unit costs per job class: right for a plan whose jobs differ in
cost, where the fraction of jobs done promises far too little."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from raytda.plan.job import Job
from raytda.run.eta import UnitCostETA


@dataclass(frozen=True, repr=False)
class Timed(Job):
    """A job of a class (its work shape) with an analytic work of ``work`` units."""

    cls: str
    index: int
    work: float
    kind: str = field(default="probe", init=False)

    def spec(self) -> dict[str, Any]:
        return {"cls": self.cls, "index": self.index}

    def work_shape(self) -> dict[str, Any] | None:
        return {"cls": self.cls}


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def plan() -> tuple[list[Timed], list[Timed], Timed]:
    """Ten trainings (2 s each, 100 units), ten feature blocks (8 s each, but only 200
    units: the analytic model underrates them), one evaluation (10 units)."""
    trainings = [Timed("train", i, 100.0) for i in range(10)]
    blocks = [Timed("block", i, 200.0) for i in range(10)]
    return trainings, blocks, Timed("evaluate", 0, 10.0)


def run(eta: UnitCostETA, clock: Clock, job: Job, seconds: float) -> None:
    eta.started(job)
    clock.t += seconds
    eta.stopped(job.key)


def test_eta_charges_each_class_its_measured_cost():
    clock = Clock()
    trainings, blocks, evaluate = plan()
    eta = UnitCostETA([*trainings, *blocks, evaluate], clock, work=lambda j: j.work)
    assert eta.seconds_left() is None  # nothing measured yet
    for job in trainings:
        run(eta, clock, job, 2.0)
    # Blocks and the evaluation not seen yet: their analytic work at the measured
    # 20 s / 1000 units of the trainings.
    assert eta.seconds_left() == pytest.approx((10 * 200 + 10) * 20 / 1000)
    run(eta, clock, blocks[0], 8.0)
    # Blocks now at their own measured 8 s; the evaluation at 28 s / 1200 units.
    expected = 9 * 8.0 + 10 * 28 / 1200
    assert eta.seconds_left() == pytest.approx(expected)
    # What is really left is 9 blocks of 8 s and an evaluation: the estimate is off by
    # the evaluation's guess only, while the fraction of jobs done (11 of 21 in 28 s)
    # would promise 10 * 28 / 11 = 25.5 s, under a third of it.
    real = 9 * 8.0 + 0.5
    assert abs(eta.seconds_left() - real) < 0.5
    assert 10 * 28 / 11 < real / 2.8
    # A running block is charged what it has left.
    eta.started(blocks[1])
    clock.t += 3.0
    assert eta.seconds_left() == pytest.approx(expected - 3.0)
    clock.t += 5.0
    eta.stopped(blocks[1].key)
    for job in blocks[2:]:
        run(eta, clock, job, 8.0)
    run(eta, clock, evaluate, 0.5)
    assert eta.seconds_left() == 0.0


def test_jobs_side_by_side_shorten_the_eta_by_the_measured_concurrency():
    clock = Clock()
    blocks = [Timed("block", i, 1.0) for i in range(6)]
    eta = UnitCostETA(blocks, clock, work=lambda j: j.work)
    eta.started(blocks[0])
    eta.started(blocks[1])
    clock.t += 4.0
    eta.stopped(blocks[0].key)
    eta.stopped(blocks[1].key)
    # 8 job-seconds in 4 s of wall time: two at once; four left of 4 s each.
    assert eta.seconds_left() == pytest.approx(4 * 4.0 / 2)


def test_jobs_found_cached_or_failed_are_not_measured():
    clock = Clock()
    blocks = [Timed("block", i, 1.0) for i in range(3)]
    eta = UnitCostETA(blocks, clock, work=lambda j: j.work)
    eta.started(blocks[0])
    clock.t += 100.0
    eta.stopped(blocks[0].key, measured=False)  # failed after 100 s: no unit cost
    assert eta.seconds_left() is None
    run(eta, clock, blocks[1], 2.0)
    # Two settled; one left at the one measured 2 s; the failed job's time was busy time
    # but the concurrency is at least one.
    assert eta.seconds_left() == pytest.approx(2.0)


def test_unknown_analytic_work_falls_back_to_the_mean_of_measured_jobs():
    clock = Clock()
    a, b = Timed("train", 0, 1.0), Timed("other", 0, 1.0)
    eta = UnitCostETA([a, b], clock, work=lambda j: None)
    run(eta, clock, a, 6.0)
    assert eta.seconds_left() == pytest.approx(6.0)


@dataclass(frozen=True, repr=False)
class TimedBlock(Timed):
    kind: str = field(default="block", init=False)


def test_a_new_class_of_a_measured_kind_takes_that_kinds_rate():
    """A masked feature block after an unmasked one: charged at the blocks' measured
    seconds per unit of work, not the trainings' (which underrate it)."""
    clock = Clock()
    trainings = [Timed("train", i, 100.0) for i in range(10)]
    unmasked, masked = TimedBlock("unmasked", 0, 200.0), TimedBlock("masked", 0, 200.0)
    eta = UnitCostETA([*trainings, unmasked, masked], clock, work=lambda j: j.work)
    for job in trainings:
        run(eta, clock, job, 2.0)
    run(eta, clock, unmasked, 8.0)
    assert eta.expected(masked.key) == pytest.approx(200 * 8.0 / 200)
    assert eta.seconds_left() == pytest.approx(8.0)


def test_evaluations_of_larger_ensembles_are_a_class_of_their_own(tmp_path):
    from raytda.api import Sweep
    from raytda.run.eta import analytic_work, job_class

    sweep = Sweep("toy-mlp", ensembles=["naive:I=1", "naive:I=2", "dropout:I=1,D=2"],
                  lds=None, proj_dim=8, store=str(tmp_path), progress=False)
    results = {e.ensemble.label: e for e in sweep.plan().evaluations}
    one, two = results["naive I=1"], results["naive I=2"]
    assert job_class(one) != job_class(two)
    assert job_class(two) == job_class(results["dropout I=1 D=2"])  # two members each
    assert analytic_work(two) == 2 * analytic_work(one)
