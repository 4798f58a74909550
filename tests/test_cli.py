"""The command line: sweep, plan, report, and one clear error line for bad input."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from raytda.cli import expand_grid, main

SMALL = ["--setting", "toy-mlp", "--proj-dim", "8", "--lds-m", "5", "--quiet",
         "--ensemble", "naive:I=1|2", "--ensemble", "dropout:I=1,D=2"]


def test_grid_expansion():
    got = [e.label for e in expand_grid("dropout:I=1|3,D=10|25")]
    assert got == ["dropout I=1 D=10", "dropout I=1 D=25", "dropout I=3 D=10", "dropout I=3 D=25"]


def test_sweep_then_report(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["sweep", "--out", str(out), *SMALL]) == 0
    df = pd.read_parquet(out / "results.parquet")
    for col in ("setting", "method", "ensemble", "I", "D", "L", "lds", "lds_se", "train_time_s",
                "serve_time_s", "params", "peak_mem_bytes"):
        assert col in df.columns
    assert len(df) == 3 and list(out.glob("*.png"))
    assert main(["plan", "--out", str(out), *SMALL]) == 0
    assert "0" in capsys.readouterr().out.splitlines()[1]  # nothing left to run
    assert main(["report", str(out)]) == 0
    assert "dropout I=1 D=2" in capsys.readouterr().out


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("raytda: error:")
    return err[0]


@pytest.mark.parametrize("argv, needle", [
    (["--setting", "nope"], "unknown setting"),
    (["--method", "magic"], "unknown method"),
    (["--ensemble", "naive:I=0"], "I (number of trained models) must be"),
    (["--ensemble", "dropout:I=1,D=0"], "D (dropout masks per model) must be"),
    (["--lds-alpha", "1.5"], "alpha must lie in (0, 1)"),
    (["--proj-dim", "0"], "projection dimension must be"),
    (["--ensemble", "wide:I=1"], "unknown ensemble kind"),
    (["--setting", "mnist-mlp", "--data-dir", "/nonexistent"], "does not exist"),
])
def test_bad_input_gives_one_clear_line_and_writes_nothing(tmp_path, capsys, argv, needle):
    out = tmp_path / "out"
    assert main(["sweep", "--out", str(out), "--quiet", *argv]) == 2
    assert needle in error_line(capsys)
    assert not out.exists()


def test_data_dir_without_the_files(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    assert main(["sweep", "--out", str(out), "--setting", "mnist-mlp", "--data-dir",
                 str(empty)]) == 2
    assert "train-images-idx3-ubyte" in error_line(capsys)
    assert not out.exists()


def test_config_file_with_unknown_axis(tmp_path, capsys):
    cfg = tmp_path / "sweep.json"
    cfg.write_text(json.dumps({"settings": ["toy-mlp"], "widths": [1, 2]}))
    assert main(["sweep", "--out", str(tmp_path / "o"), "--config", str(cfg)]) == 2
    assert "unknown sweep axis" in error_line(capsys)


def test_config_file_runs(tmp_path):
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text("settings: [toy-mlp]\nproj_dim: 8\nlds: {m: 4}\nensembles: ['naive:I=1']\n")
    assert main(["sweep", "--out", str(tmp_path / "o"), "--config", str(cfg), "--quiet"]) == 0
    assert len(pd.read_parquet(tmp_path / "o" / "results.parquet")) == 1


def test_sigterm_stops_like_ctrl_c(tmp_path):
    """SIGTERM (Kubernetes, SLURM) mid-sweep: one raytda line, no traceback, exit 143."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    # A clean environment and a session of its own: nothing an earlier test left in this
    # process (environment, process group) reaches the sweep.
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env["PYTHONPATH"] = str(root)
    # Enough jobs that the sweep is still running when the signal comes (progress on: its
    # first line, written to the pipe as the jobs start). Wait for that line, not for one
    # job's label: a fast job may never show in a progress line.
    argv = [sys.executable, "-m", "raytda.cli", "sweep", "--setting", "toy-mlp", "--proj-dim",
            "8", "--lds-m", "300", "--ensemble", "naive:I=1|2|3|4|5", "--out", str(tmp_path / "o")]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=root, start_new_session=True)
    seen = b""
    while b" jobs done" not in seen:
        chunk = proc.stderr.read1(4096)
        if not chunk:
            out = proc.communicate(timeout=60)[0].decode()[-2000:]
            raise AssertionError(f"the sweep ended (exit {proc.returncode}) before it was "
                                 f"signalled; stderr: {seen.decode()!r}; stdout: {out!r}")
        seen += chunk
    proc.send_signal(signal.SIGTERM)
    try:
        rest = proc.communicate(timeout=120)[1]
    finally:
        proc.kill()
    err = (seen + rest).decode()
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.startswith("raytda:")]
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert lines == ["raytda: terminated (SIGTERM); finished artifacts are kept, rerun to "
                     "resume"], err
    assert "Traceback" not in err
