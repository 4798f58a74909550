"""The node's timing slot: costed jobs run alone, uncosted work runs side by side, and a
dead holder never blocks the node. Ordering is checked with events, never with timings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

from raytda.plan.evaluate import Evaluate
from raytda.plan.members import MemberBlock, QValues
from raytda.plan.models import LDSModel, TrainModel
from raytda.run import timing_slot as ts


@pytest.fixture(autouse=True)
def own_slot(tmp_path, monkeypatch):
    monkeypatch.setenv(ts.ENV, str(tmp_path / "slot.lock"))


def hold(exclusive: bool, entered: threading.Event, release: threading.Event, log: list):
    with ts.timing_slot(exclusive) as info:
        log.append(("in", exclusive, info["timing"]))
        entered.set()
        release.wait(60)
        log.append(("out", exclusive))


def start(exclusive: bool, log: list):
    entered, release = threading.Event(), threading.Event()
    t = threading.Thread(target=hold, args=(exclusive, entered, release, log), daemon=True)
    t.start()
    return t, entered, release


def test_a_costed_job_waits_for_every_other_holder_and_excludes_them():
    log: list = []
    t1, in1, out1 = start(False, log)
    t2, in2, out2 = start(False, log)
    assert in1.wait(30) and in2.wait(30)  # shared holders overlap
    t3, in3, out3 = start(True, log)
    assert not in3.wait(0.5)  # (a lower bound on blocking, not a timing of anything)
    out1.set()
    out2.set()
    assert in3.wait(30)
    t4, in4, out4 = start(False, log)
    assert not in4.wait(0.5)
    out3.set()
    assert in4.wait(30)
    out4.set()
    for t in (t1, t2, t3, t4):
        t.join(30)
    # the exclusive holder entered after both shared ones left, and before the last came in
    order = [e[:2] for e in log]
    i3 = order.index(("in", True))
    assert {("out", False)} <= set(order[:i3]) and order[:i3].count(("out", False)) == 2
    assert order[i3 + 1] == ("out", True)
    assert [e[2] for e in log if e[0] == "in"] == [ts.SHARED, ts.SHARED, ts.ALONE, ts.SHARED]


def test_slot_free_says_which_hold_would_start_now_without_taking_it():
    assert ts.slot_free(True) and ts.slot_free(False)  # nobody holds it
    for exclusive, free in ((False, {True: False, False: True}),
                            (True, {True: False, False: False})):
        log: list = []
        t, entered, release = start(exclusive, log)
        assert entered.wait(60)
        assert {mode: ts.slot_free(mode) for mode in (True, False)} == free
        release.set()
        t.join(60)
    assert ts.slot_free(True)  # looking took nothing


def test_a_killed_holder_releases_the_slot(tmp_path):
    code = ("import sys, time\n"
            "from raytda.run.timing_slot import timing_slot\n"
            "with timing_slot(True):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ})
    try:
        assert proc.stdout.readline().strip() == "held"
        log: list = []
        t, entered, release = start(True, log)
        assert not entered.wait(0.5)
        proc.send_signal(signal.SIGKILL)
        assert entered.wait(30)
        release.set()
        t.join(30)
    finally:
        proc.kill()
        proc.wait()


def test_only_ground_truth_trainings_are_uncosted():
    from raytda.ensembles import Ensemble
    from raytda.methods import Method
    from raytda.specs import LDSSpec, Member
    from raytda.tasks import get_task

    task = get_task("toy-mlp")
    model = TrainModel(task, 0)
    member = Member(0, None, None, 0)
    assert not LDSModel(task, LDSSpec(m=3), 0).costed
    for job in (model, QValues(model, member), MemberBlock(model, member, Method()),
                Evaluate(task, Method(), Ensemble("naive", 1), None)):
        assert job.costed, job


def test_jobs_of_different_members_share_a_work_class_and_evaluations_have_none():
    from raytda.ensembles import Ensemble
    from raytda.methods import Method
    from raytda.plan.planner import SweepSpec, make_plan
    from raytda.specs import Member
    from raytda.tasks import get_task

    task = get_task("toy-mlp")
    m0, m1 = TrainModel(task, 0), TrainModel(task, 1)
    trak = Method("trak", proj_dim=8)
    # the same work for another model, mask or projection: one class
    assert MemberBlock(m0, Member(0), trak).work_class \
        == MemberBlock(m1, Member(1), trak).work_class
    masked = {MemberBlock(m, Member(m.index, None, d, d), trak).work_class
              for m in (m0, m1) for d in range(3)}
    assert len(masked) == 1 and None not in masked
    assert QValues(m0, Member(0)).work_class == QValues(m1, Member(1)).work_class
    # different work: masked or not, another k, another job kind, another task
    unmasked = MemberBlock(m0, Member(0), trak).work_class
    assert unmasked not in masked
    assert MemberBlock(m0, Member(0), Method("trak", proj_dim=16)).work_class != unmasked
    assert QValues(m0, Member(0)).work_class != unmasked
    other = get_task("toy-mlp", n_train=24)
    assert MemberBlock(TrainModel(other, 0), Member(0), trak).work_class != unmasked
    assert m0.work_class == m1.work_class != TrainModel(other, 0).work_class
    # evaluations (one per configuration) are timed alone, always
    plan = make_plan(SweepSpec(tasks=(task,), methods=(trak,),
                               ensembles=(Ensemble("naive", 2), Ensemble("dropout", 2, 3)),
                               lds=None))
    for job in plan.jobs:
        assert (job.work_class is None) == (job.kind == "result"), job.describe()
