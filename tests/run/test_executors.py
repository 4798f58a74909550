"""Executors are registered parts: a user's kind runs a sweep by its name, the CLI and
Tune read what a kind says (not its name), and an unknown name lists the known ones."""

from __future__ import annotations

import pytest
import torch
from test_user_task import GatedTask

from raytda import LDSSpec, Sweep
from raytda.methods import Method
from raytda.run.executors import (
    EXECUTORS,
    ExecutorKind,
    default_executor,
    executor_kind,
    make_executor,
    register_executor,
)
from raytda.run.local import InProcessExecutor
from raytda.specs import SpecError


class Counting(InProcessExecutor):
    """The in-process executor, counting the plans it executes."""

    plans = 0

    def execute(self, plan, store):
        Counting.plans += 1
        super().execute(plan, store)


@pytest.fixture
def counting():
    @register_executor
    class CountingKind(ExecutorKind):
        name = "test-counting"
        summary = "in-process, counted"

        def make(self, compute, address, progress):
            return Counting(compute, progress)

    yield CountingKind.name
    EXECUTORS.pop(CountingKind.name)


def test_a_registered_executor_runs_a_sweep_by_name(tmp_path, counting):
    Counting.plans = 0
    df = Sweep(GatedTask(), Method("grad-dot", proj_dim=8), ["naive:I=1"], lds=LDSSpec(m=3),
               store=str(tmp_path), executor=counting, progress=False).run()
    assert Counting.plans == 1 and len(df) == 1


def test_kinds_say_what_callers_need():
    assert not executor_kind("local").distributed
    assert executor_kind("ray").distributed and executor_kind("ray").joins_cluster
    assert default_executor(None) == "local"
    assert executor_kind(default_executor("127.0.0.1:6379")).joins_cluster
    assert executor_kind(object()) is None


def test_an_unknown_executor_lists_the_known_ones():
    with pytest.raises(SpecError, match=r"unknown executor 'slurm'.*'local', 'ray'"):
        make_executor("slurm", None)
    with pytest.raises(SpecError, match="execute"):
        make_executor(42, None)


def test_in_process_a_failed_job_blocks_only_its_dependents(tmp_path):
    # The same recovery as on Ray: the failing evaluation fails, the independent one
    # still runs, and the sweep raises one line at the end naming the first failure.
    import failing_task

    from raytda.methods import METHODS
    from raytda.run.recovery import JobFailed
    from raytda.store import ArtifactStore

    try:
        s = Sweep(failing_task.Task(), [Method("breaks-at-row", proj_dim=4),
                                        Method("grad-dot", proj_dim=4)],
                  ["naive:I=1"], lds=None, store=str(tmp_path), progress=False)
        with pytest.raises(JobFailed, match=r"^job evaluate breaks-at-row .* failed: "
                                            r"ValueError: cannot score test row 2"):
            s.run()
        good = next(e for e in s.spec.evaluations() if e.method.name == "grad-dot")
        assert ArtifactStore(str(tmp_path)).has(good.key)
    finally:
        METHODS.pop("breaks-at-row", None)


def test_in_process_packs_and_equal_models_trained_alone(tmp_path):
    # With train_pack "auto" LDS models and naive members train in stacked packs:
    # the same artifacts, bit for bit, as one by one (train_pack=1), and each record says
    # it was packed (its cost its pack share)
    from raytda import ComputeArgs
    from raytda.plan.planner import collect
    from raytda.store import ArtifactStore

    def sweep(store, compute):
        return Sweep("toy-mlp", Method("grad-dot", proj_dim=8), ["naive:I=5"],
                     lds=LDSSpec(m=5), store=str(store), progress=False, compute=compute)

    alone, packed = sweep(tmp_path / "a", ComputeArgs(train_pack=1)), \
        sweep(tmp_path / "p", ComputeArgs(train_pack="auto"))
    plain, stacked = alone.run(), packed.run()
    assert plain["lds"].tolist() == stacked["lds"].tolist()
    # the results say how the configuration's models trained
    assert stacked["train_packed"].tolist() == [5] and plain["train_packed"].tolist() == [1]
    torch.testing.assert_close(alone.scores("naive:I=5"), packed.scores("naive:I=5"),
                               rtol=0, atol=0)
    a, p = ArtifactStore(str(tmp_path / "a")), ArtifactStore(str(tmp_path / "p"))
    trained = [j for j in collect(packed.spec.evaluations()) if j.kind in ("model", "ldsmodel")]
    assert len(trained) == 5 + 5  # packs of 5: the smallest "auto" makes
    for job in trained:
        meta = p.meta(job.key)
        assert meta["packed"] > 1 and "packed" not in a.meta(job.key)
        assert meta["train_time_s"] == pytest.approx(meta["pack_train_time_s"] / meta["packed"])
        # its own record, naming its own inputs (not a part of the pack)
        assert p.record(job.key)["inputs"] == a.record(job.key)["inputs"]
        for name, t in a.get(job.key)[0].items():
            assert torch.equal(t, p.get(job.key)[0][name]), (job.describe(), name)
