"""The in-process executor with other sweeps on its store: it runs what nobody holds, puts
aside what another sweep computes, and takes over a dead sweep's jobs. No Ray needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pandas as pd
import pytest
import torch
from ray_helpers import lds_by_label, make_sweep
from shared_store import hold_lease, independent_of, sweep_process

from raytda.plan.models import LDSModel, TrainModel
from raytda.run.local import InProcessExecutor
from raytda.store import ArtifactStore
from raytda.store.holders import host_tag
from raytda.store.lease import read_lease


def test_two_sweep_processes_split_the_work_and_agree(tmp_path, reference):
    store = tmp_path / "store"
    procs = [sweep_process(tmp_path, store, me, partner)
             for me, partner in (("a", "b"), ("b", "a"))]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    st = ArtifactStore(str(store))
    keys = st.keys()
    puts = {me: (tmp_path / f"{me}.puts").read_text().split() for me in "ab"}
    # No artifact computed twice: every key written once, by one of the two.
    written = Counter(puts["a"] + puts["b"])
    assert set(written.values()) == {1}, written.most_common(3)
    assert sorted(written) == keys
    # The work is split, and each artifact's record names the process that made it.
    pid_of = {me: {st.meta(k)["pid"] for k in puts[me]} for me in "ab"}
    assert all(len(pids) == 1 for pids in pid_of.values()), pid_of
    assert pid_of["a"] != pid_of["b"]
    assert puts["a"] and puts["b"], {me: len(v) for me, v in puts.items()}
    # Both report the same table and scores, equal to one process alone.
    a, b = (pd.read_pickle(tmp_path / f"{me}.results.pkl") for me in "ab")
    pd.testing.assert_frame_equal(a, b)
    assert lds_by_label(a) == reference[0]
    sa, sb = (torch.load(tmp_path / f"{me}.scores.pt") for me in "ab")
    assert sa.keys() == sb.keys() == set(a["label"])
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not [p for p in store.rglob("*") if ".lease" in p.name or ".tmp-" in p.name]


@pytest.fixture
def held_model(tmp_path):
    """A plan's first ensemble model, its lease held by another process until every job
    that does not need it is in the store (a deadline ends an executor that waits
    instead); yields (sweep, held job, the holder's report file)."""
    sweep = make_sweep(tmp_path / "store", "--executor", "local")
    plan = sweep.plan()
    held = next(j for j in plan.todo if isinstance(j, TrainModel))
    others = independent_of(held, plan.todo)
    # The others include LDS trainings: work there is to do while the model is held.
    assert any(isinstance(plan_job, LDSModel) for plan_job in plan.todo
               if plan_job.key in others)
    report = tmp_path / "holder.json"
    holder = hold_lease(tmp_path / "store", held.key, others, report, deadline_s=300)
    yield sweep, held, report
    holder.kill()
    holder.wait()


def test_a_job_another_sweep_holds_is_put_aside(held_model, reference, one_torch_thread):
    sweep, held, report = held_model
    df = sweep.run()  # finishes once the holder lets go, having run the rest meanwhile
    seen = json.loads(report.read_text())
    assert seen == {"missing": [], "built_while_held": False}
    assert sweep.store.meta(held.key)["pid"] == os.getpid()
    assert lds_by_label(df) == reference[0]


def test_a_dead_sweeps_job_is_taken_over(tmp_path, reference, one_torch_thread):
    sweep = make_sweep(tmp_path / "store", "--executor", "local")
    held = next(j for j in sweep.plan().todo if isinstance(j, TrainModel))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    path = sweep.store.lease_path(held.key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:  # a lease far from expiry whose holder is gone
        json.dump({"host": host_tag(), "pid": int(dead.stdout), "token": "t",
                   "expires": 4e9}, f)
    sweep._executor = InProcessExecutor(progress=False)
    assert lds_by_label(sweep.run()) == reference[0]
    assert sweep.store.has(held.key) and read_lease(sweep.store, held.key) is None
