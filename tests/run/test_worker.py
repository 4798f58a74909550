"""What every executor's job runner does the same way: torch threads equal to the job's
CPU reservation, the measuring context in each artifact's meta, per-process model and
projection caches that change no value and no measured cost. No Ray needed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from raytda.core import projector_cache
from raytda.core.args import ComputeArgs
from raytda.core.projection import CHUNK_ROWS, GaussianProjector
from raytda.plan.job import Job
from raytda.plan.planner import Plan
from raytda.run.local import InProcessExecutor
from raytda.run.worker import JobRunner, resources_label
from raytda.store import ArtifactStore
from raytda.tasks import get_task


@dataclass(frozen=True, repr=False)
class StoredModel(Job):
    """Model weights already in the store under ``stored_key``."""

    stored_key: str
    kind: str = field(default="model", init=False)
    holds_model = True

    @property
    def key(self) -> str:
        return self.stored_key


@dataclass(frozen=True, repr=False)
class ThreadProbe(Job):
    """Stores the torch thread count it ran with, and reads a model artifact twice."""

    task: Any
    model_key: str | None = None
    kind: str = field(default="probe", init=False)

    def spec(self) -> dict[str, Any]:
        return {"probe": "threads", "model": self.model_key}

    def deps(self) -> tuple[Job, ...]:
        return () if self.model_key is None else (StoredModel(self.model_key),)

    def run(self, store, args) -> None:
        if self.model_key is not None:
            a, _ = store.get(self.model_key)
            b, _ = store.get(self.model_key)
            assert a is b  # the second read is the process's kept copy
        store.put(self.key, {"x": torch.zeros(1)}, {"threads": torch.get_num_threads()},
                  self.spec())


@pytest.fixture
def many_threads():
    n = torch.get_num_threads()
    torch.set_num_threads(max(2, n))
    yield
    torch.set_num_threads(n)


def test_in_process_jobs_run_on_their_reservation(tmp_path, many_threads):
    store = ArtifactStore(str(tmp_path / "store"))
    task = get_task("toy-mlp")
    store.put("model-abc", {"w": torch.ones(3)}, {}, {})
    job = ThreadProbe(task, "model-abc")
    ex = InProcessExecutor(progress=False)
    ex.execute(Plan(jobs=[job], evaluations=[], cached=set()), store)
    meta = store.meta(job.key)
    assert meta["threads"] == 1  # the job's one CPU, not the machine's default
    assert torch.get_num_threads() >= 2  # and the caller's setting is back
    assert meta["resources"] == resources_label(1) == "cpu x1"
    assert meta["worker"] == "local" and meta["pid"] > 0 and meta["node_id"]
    assert meta["loads"]["model_loads"] == 1 and meta["loads"]["model_hits"] == 1


def test_runner_counts_data_loads_once(tmp_path):
    from raytda.tasks import cache

    task = get_task("toy-mlp", n_train=30)  # a task key no other test has loaded
    cache._CACHE.pop(task.key, None)

    @dataclass(frozen=True, repr=False)
    class ReadsData(ThreadProbe):
        def run(self, store, args) -> None:
            task.data()
            super().run(store, args)

    from raytda.core.args import ComputeArgs

    runner, store = JobRunner(), ArtifactStore(str(tmp_path / "s"))
    store.put("model-abc", {"w": torch.ones(3)}, {}, {})
    for job in (ReadsData(task), ReadsData(task, "model-abc")):  # two distinct jobs
        runner.run(job, store, ComputeArgs())
    assert runner.loads()["data_loads"] == 1 and runner.loads()["jobs"] == 2
    first = store.meta(ReadsData(task).key)["loads"]
    assert first["data_loads"] == 1  # counted by the job that loaded it


def test_cached_projector_same_values_built_once(monkeypatch):
    projector_cache.clear()
    monkeypatch.setattr(projector_cache, "_budget", 1 << 26)
    order = torch.randperm(5000)
    ref = GaussianProjector(5000, 32, 7)
    p1 = projector_cache.projector(5000, 32, 7)
    m1 = p1.matrix(order)
    p1.take_reused_s()
    p2 = projector_cache.projector(5000, 32, 7)
    assert p2 is p1
    m2 = p2.matrix(order)
    assert m2 is m1 and torch.equal(m1, ref.matrix(order))
    # A reuse is charged what the build took, so the measured cost does not change.
    assert p2.take_reused_s() == p1._build_s[projector_cache._tag(order)] > 0
    g = torch.randn(4, 5000)
    assert torch.equal(p2.project(g), ref.project(g))
    s = projector_cache.stats()
    assert s["projections_built"] == 2 and s["projection_hits"] == 1  # permuted + plain


def test_projector_cache_stays_within_budget(monkeypatch):
    projector_cache.clear()
    one = 5000 * 32 * 4
    monkeypatch.setattr(projector_cache, "_budget", 2 * one)
    for seed in range(4):
        projector_cache.projector(5000, 32, seed).materialize()
    s = projector_cache.stats()
    assert s["projection_cache_bytes"] <= 2 * one and s["projection_evictions"] == 2
    projector_cache.projector(5000, 32, 0).materialize()  # evicted: built again
    assert projector_cache.stats()["projections_built"] == 5
    projector_cache.clear()


def test_streaming_projectors_buffers_count_against_the_budget(monkeypatch):
    """A projector too large to hold P streams it through a block buffer that it keeps;
    many such projectors (one per dropout member) must not pile those buffers up."""
    projector_cache.clear()
    block = CHUNK_ROWS * 32 * 4  # one chunk of rows at k = 32: the streaming buffer
    monkeypatch.setattr(projector_cache, "_budget", 2 * block)
    g = torch.randn(3, 3 * CHUNK_ROWS)
    for seed in range(6):
        p = projector_cache.projector(3 * CHUNK_ROWS, 32, seed, memory_bytes=block)
        assert not p.resident
        assert torch.equal(p.project(g), GaussianProjector(3 * CHUNK_ROWS, 32, seed, block).project(g))
    s = projector_cache.stats()  # the budget, plus the buffer of the job that ran last
    assert s["projection_cache_bytes"] <= 2 * block + block and s["projection_evictions"] >= 3
    projector_cache.clear()


@dataclass(frozen=True, repr=False)
class TimedProbe(Job):
    """A costed job that records a given serving time, as a feature block records its own."""

    task: Any
    seconds: float
    kind: str = field(default="probe", init=False)

    def spec(self) -> dict[str, Any]:
        return {"probe": "timed", "seconds": self.seconds}

    def run(self, store, args) -> None:
        store.put(self.key, {"x": torch.zeros(1)}, {"serve_time_s": self.seconds}, self.spec())


@pytest.mark.parametrize("own, alone, charged", [(3.0, 2.0, 2.0), (1.5, 2.0, 1.5)])
def test_a_job_run_beside_its_class_is_charged_at_most_the_alone_run(tmp_path, own, alone,
                                                                      charged):
    from raytda.run.timing_slot import CALIBRATED, Timing

    store = ArtifactStore(str(tmp_path / "s"))
    task = get_task("toy-mlp")
    runner = JobRunner("w")
    first = TimedProbe(task, alone)
    runner.run(first, store, ComputeArgs())  # alone: its own time, as measured
    assert store.meta(first.key)["serve_time_s"] == alone
    assert "cost_scale" not in store.meta(first.key)
    beside = TimedProbe(task, own)
    runner.run(beside, store, ComputeArgs(), timing=Timing(False, calibration=first.key))
    meta = store.meta(beside.key)
    assert meta["serve_time_s"] == charged and meta["measured_serve_time_s"] == own
    assert meta["cost_scale"] == pytest.approx(charged / own)
    assert meta["calibrated_by"] == first.key and meta["timing"] == CALIBRATED


def test_a_job_whose_calibration_is_gone_is_timed_alone(tmp_path):
    from raytda.run.timing_slot import ALONE, Timing

    store = ArtifactStore(str(tmp_path / "s"))
    job = TimedProbe(get_task("toy-mlp"), 1.0)
    JobRunner("w").run(job, store, ComputeArgs(), timing=Timing(False, calibration="gone"))
    meta = store.meta(job.key)
    assert meta["timing"] == ALONE and meta["serve_time_s"] == 1.0
    assert "calibrated_by" not in meta
