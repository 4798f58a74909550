"""The Ray executor on a local 2-CPU Ray runtime: caching, equality with the in-process
executor, and recovery from killed workers, killed drivers, corrupt files and concurrent
sweeps sharing one store."""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import ray_helpers
from ray_helpers import (
    SWEEP_ARGS,
    KillOnPut,
    KillOnSecondPut,
    cli,
    counts,
    lds_by_label,
    make_sweep,
    mtimes,
    ship_by_value,
    verify_all,
)
from test_user_task import GatedTask

from raytda.ensembles import Ensemble
from raytda.plan.job import Job
from raytda.plan.planner import make_plan
from raytda.run.ray_executor import RayExecutor
from raytda.store import ArtifactStore

pytestmark = pytest.mark.ray


def executor(**kw) -> RayExecutor:
    return RayExecutor(progress=False, shutdown=False, **kw)


@pytest.fixture(scope="module")
def first_run(ray_session, tmp_path_factory):
    """The test sweep on Ray into a fresh store, timed."""
    root = tmp_path_factory.mktemp("ray-first") / "store"
    from raytda import ComputeArgs

    # packs on Ray: an explicit limit packs the 2-3 models per actor that "auto" would
    # leave alone (packs of fewer than SMALLEST_AUTO_PACK)
    ex = executor(compute=ComputeArgs(train_pack=8))
    sweep = make_sweep(root, "--train-pack", "8", executor=ex)
    t0 = time.perf_counter()
    df = sweep.run()
    return sweep, df, time.perf_counter() - t0, ex


def test_trains_each_unique_artifact_once(first_run, reference):
    sweep, _, _, ex = first_run
    n = counts(sweep.store)
    assert n["model"] == 3  # I_max, not 1 + 2 + 3 + 1 + 2
    assert n["ldsmodel"] == 5  # m, shared by all five configurations
    assert n["result"] == 5
    assert n == reference[1]
    assert len(ex.ran) == len(set(ex.ran)) == sum(v for k, v in n.items() if k != "scores")


def test_second_run_trains_nothing(first_run):
    sweep, df, _, _ = first_run
    before = counts(sweep.store)
    stamps = mtimes(sweep.store.root)
    assert make_plan(sweep.spec, sweep.store).todo == []
    ex = executor()
    sweep._executor = ex
    again = sweep.run()
    assert ex.ran == [] and sum(ex.stats.values()) == 0
    assert counts(sweep.store) == before
    assert mtimes(sweep.store.root) == stamps
    assert lds_by_label(again) == lds_by_label(df)


def test_ray_equals_in_process(first_run, reference):
    _, df, _, _ = first_run
    assert lds_by_label(df) == reference[0]


def test_worker_killed_mid_training_is_retried(ray_session, tmp_path, reference):
    root = tmp_path / "store"
    marker = tmp_path / "killed.json"
    # Some finished artifacts first (naive I=1), so the kill has something to spare.
    small = make_sweep(root, executor=executor())
    small.spec = small.spec.replace(ensembles=(Ensemble("naive", 1),))
    small.run()
    # The first model trained next (model 1 or 2) loses its worker right before saving.
    ex = executor()
    sweep = make_sweep(root, executor=ex)
    sweep.store = KillOnPut(str(root), "model", str(marker))
    ship_by_value(ray_helpers)
    todo = len(make_plan(sweep.spec, sweep.store).todo)
    df = sweep.run()
    info = json.loads(marker.read_text())
    assert info["killed_in"].startswith("model-")
    assert lds_by_label(df) == reference[0]
    assert counts(sweep.store) == reference[1]
    assert verify_all(sweep.store) == sum(reference[1].values())
    # Nothing that had finished when the worker died was written again ...
    now = mtimes(root)
    assert info["finished"], "the kill should come after some artifacts exist"
    for path, stamp in info["finished"].items():
        assert now[path] == stamp, f"{path} was recomputed"
    # ... and every job ran to completion exactly once.
    assert len(ex.ran) == len(set(ex.ran)) == todo


def test_ray_packs_and_equals_unpacked_in_process(first_run, tmp_path):
    # train_pack 8 sends ready training jobs of one pack key to an
    # actor as one stacked pack: every model, LDS model and score equals, bit for bit,
    # the in-process sweep that trains each model alone (train_pack=1).
    import torch

    sweep, df, _, _ = first_run
    alone = make_sweep(tmp_path / "alone", "--train-pack", "1")
    plain = alone.run()
    assert lds_by_label(plain) == lds_by_label(df)
    trained = [k for kind in ("model", "ldsmodel") for k in sweep.store.keys(kind)]
    assert sorted(trained) == sorted(k for kind in ("model", "ldsmodel")
                                     for k in alone.store.keys(kind))
    packed = [k for k in trained if sweep.store.meta(k).get("packed", 1) > 1]
    assert packed, "train_pack 8 should pack some training jobs on Ray"
    for key in trained:
        meta = sweep.store.meta(key)
        assert "packed" not in alone.store.meta(key)
        if key in packed:  # its cost is its share of the pack's loop
            assert meta["train_time_s"] == pytest.approx(meta["pack_train_time_s"]
                                                         / meta["packed"])
        ray_t, one_t = sweep.store.get(key)[0], alone.store.get(key)[0]
        assert ray_t.keys() == one_t.keys()
        assert all(torch.equal(ray_t[n], one_t[n]) for n in ray_t), key
    for label in plain["label"]:
        ens = next(e for e in sweep.spec.ensembles if e.label == label)
        assert torch.equal(sweep.scores(ens), alone.scores(ens)), label


def test_a_killed_pack_keeps_the_members_it_stored(ray_session, tmp_path, reference):
    # A memory budget that holds one toy model per sub-pack: an LDS pack stores its
    # members one by one, and its actor is killed right before storing its second. Ray
    # retries the pack on the restarted actor, which finds the first stored (its lease
    # and record) and trains only the rest.
    from raytda import ComputeArgs

    root = tmp_path / "store"
    marker = tmp_path / "killed.json"
    ex = executor(compute=ComputeArgs(memory_budget_bytes=32 << 10, train_pack=8))
    sweep = make_sweep(root, executor=ex)
    sweep.store = KillOnSecondPut(str(root), "ldsmodel", str(marker))
    ship_by_value(ray_helpers)
    df = sweep.run()
    info = json.loads(marker.read_text())
    assert info["killed_in"].startswith("ldsmodel-")
    stored = [p for p in info["finished"] if "ldsmodel-" in Path(p).name]
    assert stored, "the pack's first member should be stored before the kill"
    now = mtimes(root)
    for path, stamp in info["finished"].items():
        assert now[path] == stamp, f"{path} was recomputed"
    assert ex.stats["cached"] >= 1  # the stored member, found so by the retried pack
    assert lds_by_label(df) == reference[0]
    # the same artifacts (scores come in more chunks at this budget)
    assert {k: v for k, v in counts(sweep.store).items() if k != "scores"} == \
        {k: v for k, v in reference[1].items() if k != "scores"}


def _flip_byte(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF
    path.write_bytes(bytes(blob))


def _payload(store: ArtifactStore, key: str) -> Path:
    return Path(store.root) / key.split("-", 1)[0] / f"{key}.st"


def test_corrupt_input_is_rebuilt_then_consumer_rerun(ray_session, tmp_path, reference):
    """A checksum failure found by a consumer task: producer rerun, then the consumer."""
    root = tmp_path / "store"
    small = make_sweep(root, executor=executor())
    small.spec = small.spec.replace(ensembles=(Ensemble("naive", 1),))
    small.run()
    sweep = make_sweep(root)
    plan = make_plan(sweep.spec, sweep.store)
    model0 = next(j for j in plan.jobs if j.kind == "model" and j.key in plan.cached)
    _flip_byte(_payload(sweep.store, model0.key))  # same size: only the checksum can tell
    ex = executor()
    ex.execute(plan, sweep.store)
    assert ex.stats["repaired"] >= 1
    assert ex.ran.count(model0.key) == 1
    from raytda.results import collect_results

    assert lds_by_label(collect_results(plan, sweep.store)) == reference[0]
    assert verify_all(sweep.store) == sum(reference[1].values())


def test_truncated_artifacts_are_rebuilt(ray_session, tmp_path, reference):
    root = tmp_path / "store"
    first = make_sweep(root, executor=executor())
    first.spec = first.spec.replace(ensembles=(Ensemble("naive", 1),))
    first.run()
    store = first.store
    lds_key = store.keys("ldsmodel")[0]
    # Truncated before planning: the planner's size check drops it and plans a rebuild.
    p = _payload(store, lds_key)
    p.write_bytes(p.read_bytes()[:100])
    sweep = make_sweep(root)
    plan = make_plan(sweep.spec, sweep.store)
    assert lds_key in {j.key for j in plan.todo}
    # Truncated after planning: the task's input check reports it and the driver repairs.
    model0 = next(j for j in plan.jobs if j.kind == "model" and j.key in plan.cached)
    p = _payload(store, model0.key)
    p.write_bytes(p.read_bytes()[:-10])
    ex = executor()
    ex.execute(plan, sweep.store)
    assert ex.stats["repaired"] >= 1
    assert {lds_key, model0.key} <= set(ex.ran)
    from raytda.results import collect_results

    assert lds_by_label(collect_results(plan, sweep.store)) == reference[0]
    assert verify_all(sweep.store) == sum(reference[1].values())


def _wait_stable(root: Path, quiet_s: float = 2.0, limit_s: float = 30.0) -> dict[str, int]:
    """Artifact stamps once nothing has changed for quiet_s (orphaned tasks finished)."""
    last, since, t_end = mtimes(root), time.monotonic(), time.monotonic() + limit_s
    while time.monotonic() < t_end:
        time.sleep(0.25)
        now = mtimes(root)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
    return last


def test_driver_killed_mid_sweep_resumes(gcs_address, tmp_path, reference):
    out, store = tmp_path / "out", tmp_path / "out" / "store"
    args = ["sweep", *SWEEP_ARGS, "--out", str(out), "--address", gcs_address]
    proc = cli(*args)
    t_end = time.monotonic() + 120
    while time.monotonic() < t_end and len(mtimes(store)) < 6 and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, f"sweep ended before it could be killed: {proc.communicate()}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _wait_stable(store)
    assert 0 < len(before) < sum(reference[1].values())
    again = cli(*args)
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    after = mtimes(store)
    for path, stamp in before.items():
        assert after[path] == stamp, f"{path} was recomputed after the restart"
    import pandas as pd

    assert lds_by_label(pd.read_parquet(out / "results.parquet")) == reference[0]
    st = ArtifactStore(str(store))
    assert counts(st) == reference[1]
    assert verify_all(st) == sum(reference[1].values())


def test_two_concurrent_sweeps_share_one_store(gcs_address, tmp_path, reference):
    import pandas as pd

    store = tmp_path / "shared-store"
    procs = [
        cli("sweep", *SWEEP_ARGS, "--store", str(store), "--out", str(tmp_path / "a"),
            "--address", gcs_address),
        cli("sweep", *SWEEP_ARGS, "--store", str(store), "--out", str(tmp_path / "b"),
            "--executor", "local"),
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    for name in ("a", "b"):
        df = pd.read_parquet(tmp_path / name / "results.parquet")
        assert lds_by_label(df) == reference[0]
    st = ArtifactStore(str(store))
    assert counts(st) == reference[1]
    assert verify_all(st) == sum(reference[1].values())
    leftovers = [p for p in store.rglob("*") if p.is_file() and ".tmp-" in p.name]
    assert leftovers == []


def test_a_job_another_sweep_holds_is_put_aside(ray_session, tmp_path, reference):
    """Another sweep holds a model's lease until every job that does not need it is in
    the store: the actors run those meanwhile (none waits on the lease), then the model."""
    from shared_store import hold_lease, independent_of

    from raytda.plan.models import TrainModel

    ex = executor(poll_s=0.2)
    sweep = make_sweep(tmp_path / "store", executor=ex)
    plan = sweep.plan()
    held = next(j for j in plan.todo if isinstance(j, TrainModel))
    report = tmp_path / "holder.json"
    holder = hold_lease(tmp_path / "store", held.key, independent_of(held, plan.todo), report,
                        deadline_s=300)
    try:
        df = sweep.run()
    finally:
        holder.kill()
        holder.wait()
    assert json.loads(report.read_text()) == {"missing": [], "built_while_held": False}
    assert ex.stats["leased"] >= 1 and held.key in ex.ran  # put aside, then run here
    assert lds_by_label(df) == reference[0]


class UntrainableTask(GatedTask):
    """Its data checks out on the driver, but every training fails on the workers."""

    name = "untrainable-blobs"

    def train(self, model, data, seed, device, recipe=None):
        raise RuntimeError("the trainer's data directory is gone on this node")


def test_failing_jobs_block_only_their_dependents(ray_session, tmp_path):
    """A job that keeps failing (here: its training) is not retried, its dependents are
    skipped, every independent job still runs, and the sweep then raises."""
    from raytda.plan.planner import SweepSpec
    from raytda.run.ray_executor import JobFailed

    good = make_sweep(tmp_path / "unused").spec
    spec = SweepSpec(tasks=(good.tasks[0], UntrainableTask()), methods=good.methods,
                     ensembles=(Ensemble("naive", 1),), lds=good.lds)
    store = ArtifactStore(str(tmp_path / "store"))
    plan = make_plan(spec, store)
    ex = executor()
    with pytest.raises(JobFailed, match="data directory is gone"):
        ex.execute(plan, store)
    done = set(store.keys())
    for job in plan.jobs:
        assert (job.key in done) == (job.task.name == "toy-mlp"), job
    # Only the trainings of the failing task ran and failed (one model, m LDS models),
    # once each.
    assert ex.stats["failed"] == 1 + good.lds.m


def test_actors_record_where_and_on_what_jobs_ran(first_run):
    """Every artifact says which actor and node ran it and on what reservation; each
    actor built each distinct projection it used once; the Q and block jobs found their
    model held by the actor that ran them at least once."""
    from raytda.plan.seeds import projection_seed

    sweep, df, _, ex = first_run
    assert set(df["measured_on"]) == {"cpu x1"}
    plan = make_plan(sweep.spec, ArtifactStore(str(tmp_empty(sweep))))
    used: dict[str, set[int]] = {}
    built: dict[str, int] = {}
    hits = 0
    for job in plan.jobs:
        meta = sweep.store.meta(job.key)
        assert meta["resources"] == "cpu x1"
        assert meta["worker"].startswith("raytda-worker-") and meta["node_id"]
        assert ex.placement[job.key]["worker"] == meta["worker"]
        if job.kind == "block":
            used.setdefault(meta["worker"], set()).add(projection_seed(job.model, job.member))
            built[meta["worker"]] = max(built.get(meta["worker"], 0),
                                        meta["loads"]["projections_built"])
        hits = max(hits, meta["loads"]["model_hits"])
    assert used and built == {w: len(s) for w, s in used.items()}
    assert hits > 0
    assert set(ex.workers) >= set(used)


def test_costs_are_cpu_time_of_the_jobs_own_thread_with_wall_time_beside(first_run):
    """Actors run jobs side by side with nothing waiting for timing; each cost is the
    CPU time of the job's one thread, which cannot exceed the wall time it ran (a
    thread runs at most all of it), and each configuration says what its costs count."""
    sweep, df, _, _ = first_run
    plan = make_plan(sweep.spec, ArtifactStore(str(tmp_empty(sweep))))
    for job in plan.jobs:
        meta = sweep.store.meta(job.key)
        if job.kind in ("model", "q"):
            field = job.cost_field
            wall = field.replace("_time_s", "_wall_s")
            assert 0 < meta[field] <= meta[wall], (job.describe(), meta)
    assert set(df["cost_clock"]) == {"cpu"}
    assert (df["train_wall_s"] > 0).all() and (df["serve_wall_s"] > 0).all()


def tmp_empty(sweep) -> Path:
    """A store path with nothing in it, so make_plan lists every job of the sweep."""
    return Path(sweep.store.root).parent / "empty-store-for-planning"


def test_state_api_lists_the_actors(ray_session, tmp_path):
    """`ray list actors` (the state API) shows the pool while a sweep runs, when this
    Ray has its dashboard; the simulated-cluster test checks it there in any case."""
    import threading

    from ray.util.state import list_actors

    try:
        list_actors(limit=1)
    except Exception:
        pytest.skip("this Ray runtime has no state API server (started without dashboard)")
    ex = executor()
    sweep = make_sweep(tmp_path / "store", executor=ex)
    sweep.spec = sweep.spec.replace(ensembles=(Ensemble("naive", 1),))
    seen: set[str] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.update(a.name for a in list_actors(filters=[("class_name", "=",
                                                              "RaytdaWorker")]))
            stop.wait(0.2)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    sweep.run()
    stop.set()
    t.join()
    assert seen and seen <= set(ex.workers)


@dataclass(frozen=True, repr=False)
class NamedProbe(Job):
    """Records the name Ray knows its running task by (what the dashboard and `ray list
    tasks` show) in its artifact's meta."""

    task: Any
    index: int
    kind: str = field(default="probe", init=False)
    costed: bool = field(default=False, init=False)
    accelerated: bool = field(default=False, init=False)

    def spec(self) -> dict[str, Any]:
        return {"probe": "task-name", "index": self.index, "task": self.task.key}

    def describe(self) -> str:
        return f"probe {self.index} of {self.task.name} ckpt None"

    def run(self, store, args) -> None:
        import ray
        import torch

        store.put(self.key, {"x": torch.zeros(1)},
                  {"task_name": ray.get_runtime_context().get_task_name()}, self.spec())


def test_ray_tasks_are_named_after_their_jobs_and_progress_is_logged(ray_session, tmp_path,
                                                                      capsys):
    """Each job runs as an actor call named by its description (not `RaytdaWorker.run`),
    and the Ray executor's progress, with stderr not a terminal, is whole timestamped
    lines that end with every job done."""
    import re
    import sys

    from raytda.plan.planner import Plan

    ship_by_value(sys.modules[__name__])
    task = make_sweep(tmp_path / "unused").spec.tasks[0]
    jobs = [NamedProbe(task, i) for i in range(3)]
    store = ArtifactStore(str(tmp_path / "store"))
    capsys.readouterr()
    RayExecutor(shutdown=False).execute(Plan(jobs=jobs, evaluations=[], cached=set()), store)
    for job in jobs:
        assert store.meta(job.key)["task_name"] == f"probe {job.index} of toy-mlp"
    lines = [ln for ln in capsys.readouterr().err.split("\n") if ln]
    assert lines and all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d raytda: \d+/3 jobs done", ln)
                         and len(ln) <= 200 for ln in lines), lines
    assert lines[-1].split("raytda: ")[1].startswith("3/3 jobs done, 0 running, 0 cached, "
                                                    "0 failed, in ")
