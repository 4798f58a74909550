"""A job that raises reaches the user as one ``raytda: error:`` line naming the job and
its cause, and leaves nothing half-written in the store: the score chunks its evaluation
wrote before it failed are removed, while what earlier jobs finished (a whole model, a
whole block) stays for the rerun. The traceback is still there, at ``--log-level debug``."""

from __future__ import annotations

from pathlib import Path

import pytest

from raytda.cli import main
from raytda.methods import METHODS
from raytda.store import ArtifactStore
from raytda.store.verify import verify_store

TASK_FILE = Path(__file__).with_name("failing_task.py")


@pytest.fixture
def failing_sweep(tmp_path):
    """argv of a local sweep whose evaluation fails on test row 2 (one row per chunk)."""
    out, store = tmp_path / "out", tmp_path / "store"
    argv = ["sweep", "--task", f"{TASK_FILE}:Task", "--method", "breaks-at-row",
            "--ensemble", "naive:I=1", "--no-lds", "--store", str(store), "--out", str(out),
            "--executor", "local", "--quiet", "--device", "cpu",
            # 256 bytes of scores per chunk: one test row of 32 float64 scores
            "--memory-budget", "8KiB"]
    yield argv, out, store
    METHODS.pop("breaks-at-row", None)  # the task file registered it in this process


def test_a_failing_job_is_one_line_and_leaves_no_part_behind(failing_sweep, capsys):
    argv, out, store_dir = failing_sweep
    code = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    line = lines[0]
    assert line.startswith("raytda: error: job evaluate breaks-at-row naive I=1 on "
                           "tiny-failing-eval failed: ValueError: cannot score test row 2")
    assert "--log-level debug" in line
    assert not out.exists()  # no results, no plot

    store = ArtifactStore(str(store_dir))
    kinds = sorted(k.split("-", 1)[0] for k in store.keys())
    assert kinds == ["block", "model"]  # what finished is whole and kept; no score chunk
    files = [p for p in store_dir.rglob("*") if p.is_file()]
    assert not [p for p in files if ".tmp-" in p.name or p.suffix == ".lease"], files
    assert verify_store(store) == []


def test_the_traceback_is_logged_at_debug_level(failing_sweep, capsys):
    argv, _, _ = failing_sweep
    assert main(["--log-level", "debug", *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "failing_task.py" in err
    assert err.strip().splitlines()[-1].startswith("raytda: error: job evaluate")
