"""Planning is pure and cheap: keys computed once per job, each checkpoint file read once
per process, and a dry run (``raytda plan``) leaves the store byte for byte as it was."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from test_user_task import GatedNet
from test_validate import CheckpointTask

from raytda import Sweep
from raytda.cli import main
from raytda.core.checkpoint import save_checkpoint
from raytda.plan import models as jobs
from raytda.store.artifacts import temp_name


@pytest.fixture
def six_runs(tmp_path) -> CheckpointTask:
    """Six training runs of the user's own checkpoints, two files each."""
    task = CheckpointTask()
    runs = []
    for r in range(6):
        files = []
        for c in range(2):
            path = tmp_path / f"run{r}" / f"epoch{c}.safetensors"
            path.parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint(path, GatedNet().state_dict())
            files.append(path)
        runs.append(files)
    task.runs = runs
    return task


def test_planning_reads_each_checkpoint_file_once(six_runs, tmp_path, monkeypatch):
    opened: list[str] = []
    real_open = open

    def counting_open(path, *a, **kw):
        opened.append(str(Path(path).resolve()))
        return real_open(path, *a, **kw)

    monkeypatch.setattr(jobs, "_FILE_DIGESTS", {})
    monkeypatch.setattr(jobs, "open", counting_open, raising=False)
    sweep = Sweep(six_runs, ensembles=["naive:I=6", "naive:I=3", "dropout:I=6,D=2",
                                        "checkpoints:I=6,C=2", "checkpoints-dropout:I=4,C=2,D=2"],
                  lds=None, store=str(tmp_path / "store"), progress=False)
    plan = sweep.plan()
    sweep.plan()  # a second plan in the same process reads nothing again
    files = {str(p.resolve()) for run in six_runs.runs for p in run}
    assert len(files) == 12 and sorted(opened) == sorted(files)
    assert sum(1 for j in plan.jobs if j.kind == "model") == 6


def test_a_changed_checkpoint_file_is_read_again(six_runs, tmp_path, monkeypatch):
    monkeypatch.setattr(jobs, "_FILE_DIGESTS", {})
    path = six_runs.runs[0][1]
    before = jobs.file_digest(path)
    save_checkpoint(path, {k: v + 1 for k, v in GatedNet().state_dict().items()})
    assert jobs.file_digest(path) != before
    assert jobs.file_digest(path) == hashlib.sha256(path.read_bytes()).hexdigest()[:24]


def test_a_job_key_is_computed_once(monkeypatch):
    from raytda.tasks import get_task

    job = jobs.TrainModel(get_task("toy-mlp"), 0)
    calls = []
    real = jobs.TrainModel.spec
    monkeypatch.setattr(jobs.TrainModel, "spec", lambda self: calls.append(1) or real(self))
    assert job.key == job.key == job.key
    assert len(calls) == 1


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_raytda_plan_leaves_the_store_byte_identical(tmp_path):
    store = tmp_path / "store"
    args = ["--setting", "toy-mlp", "--store", str(store), "--ensemble", "naive:I=2",
            "--lds-m", "3", "--quiet"]
    assert main(["sweep", *args, "--out", str(tmp_path / "out")]) == 0
    # make the store one a run would have to repair: an incomplete artifact (a payload
    # gone under its record) and a temp file of a writer that died
    victim = next((store / "model").glob("*.st"))
    victim.unlink()
    dead = temp_name(str(victim)).replace(f"-{os.getpid()}-", "-999999999-")
    Path(dead).write_bytes(b"partial")
    before = snapshot(store)
    assert main(["plan", *[a for a in args if a != "--quiet"]]) == 0
    assert snapshot(store) == before
