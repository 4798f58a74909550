"""The command line: sweep, plan, report, and one clear error line for bad input."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from raytda.cli import build_sweep, expand_grid, main, parser
from raytda.ensembles import ENSEMBLES, EnsembleKind, register_ensemble
from raytda.ensembles.fields import FIELD_MEANINGS
from raytda.methods import METHODS, AttributionMethod, register_method
from raytda.specs import Member
from raytda.task import Task
from raytda.tasks import TASKS, register_task, task_names

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


def test_no_lds_writes_no_plot(tmp_path, capsys):
    """An attribution-only sweep has no LDS to draw against cost: no figure, and the
    closing line says why, in ``sweep`` and in ``report``."""
    out = tmp_path / "run"
    assert main(["sweep", "--out", str(out), "--no-lds", "--setting", "toy-mlp",
                 "--proj-dim", "8", "--quiet", "--ensemble", "naive:I=1"]) == 0
    assert (out / "results.parquet").is_file()
    assert not list(out.glob("lds_vs_cost*")), list(out.iterdir())
    assert "plots: none (no LDS" in capsys.readouterr().out
    assert main(["report", str(out)]) == 0
    assert "plots: none (no LDS" in capsys.readouterr().out
    assert not list(out.glob("lds_vs_cost*"))


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("raytda: error:")
    return err[0]


@pytest.mark.parametrize("argv, needle", [
    (["--setting", "nope"], "unknown setting"),
    (["--method", "magic"], "unknown method"),
    (["--ensemble", "naive:I=0"], "I (number of trained models) must be"),
    (["--ensemble", "dropout:I=1,D=0"], "D (dropout masks per model) must be"),
    # A size the kind takes, left out: once a silent D=1 (one mask, worse than naive).
    (["--ensemble", "dropout:I=1"], "ensemble 'dropout:I=1' does not set D (dropout masks "
                                    "per model); write e.g. 'dropout:I=1,D=10'"),
    (["--ensemble", "checkpoints:I=1|2"], "ensemble 'checkpoints:I=1' does not set C "
                                          "(checkpoints per training run); write e.g. "
                                          "'checkpoints:I=1,C=3'"),
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


# ----------------------------------------------------------------------- self-description


class Halves(EnsembleKind):
    """Test kind: the first half of D masks of each model."""

    name = "test-halves"
    takes = frozenset({"D"})

    def members(self, ens, epochs):
        return tuple(Member(i, None, d, d) for i in range(ens.I) for d in range(ens.D // 2))

    def serve_time(self, ens, u):
        return ens.I * ens.D / 2 * u.serve


class Constant(AttributionMethod):
    """Test method: every score is its option c."""

    name = "test-constant"
    params = ("proj_dim",)


class TinyTask(Task):
    """Test task: a 3-in, 2-out linear model."""

    name = "test-tiny"

    def __init__(self, data_dir=None, full=False, **overrides):
        self.data_dir = data_dir

    def build_model(self):
        from torch import nn

        return nn.Linear(3, 2)


@pytest.fixture
def registered():
    """A kind, a method and a task registered from user code, removed afterwards."""
    register_ensemble(Halves)
    register_method(Constant)
    register_task("test-tiny", TinyTask)
    yield
    ENSEMBLES.pop("test-halves")
    METHODS.pop("test-constant")
    TASKS.pop("test-tiny")


def listed(out: str, section: str) -> dict[str, list[str]]:
    """Rows of one table of `raytda list`, by their first cell."""
    block = out.split(section, 1)[1].strip().split("\n\n", 1)[1].split("\n\n", 1)[0]
    return {line.split()[0]: line.split() for line in block.splitlines()[1:]}


def test_list_describes_registered_settings_kinds_and_methods(registered, capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    settings = listed(out, "settings (")
    assert set(task_names()) <= set(settings)
    # toy-mlp: 60 train / 12 test samples, 20 epochs, an 8-16-16-3 MLP (467 parameters)
    assert settings["toy-mlp"][1:5] == ["60", "12", "20", "467"]
    assert settings["test-tiny"][1:5] == ["-", "-", "-", "8"]  # 3 x 2 weights + 2 biases
    kinds = listed(out, "ensemble kinds (")
    assert set(kinds) == set(ENSEMBLES)
    assert kinds["test-halves"][1] == "I,D" and kinds["lora"][1] == "I,L"
    assert kinds["checkpoints-dropout"][1] == "I,D,C,mask_mode"
    methods = listed(out, "methods (")
    assert set(methods) == set(METHODS)
    assert methods["test-constant"][1] == "proj_dim=per-task"
    assert methods["trak"][1:4] == ["proj_dim=per-task,", "ridge=None,", "ridge_scale=per-task"]
    # what each setting's default k and features are, and why (issue 28)
    assert settings["toy-mlp"][5:12] == ["256", "(rule:", "n=60)", "dense", "(rule:", "467",
                                         "params)"]
    assert settings["toy-mlp"][12:14] == ["3", "(rule)"]
    assert settings["mnist-mlp"][5:11] == ["2048", "(declared)", "dense", "(declared)", "0",
                                           "(declared)"]
    assert settings["test-tiny"][5:9] == ["rule:", "pow2", ">=", "4n"]
    for field in ("I", "D", "C", "L", "mask_mode"):
        assert f"  {field} " in out


def test_help_explains_fields_and_lists_registries(registered, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # help wraps lines
    for meaning in FIELD_MEANINGS.values():
        assert " ".join(meaning.split()) in out
    for name in (*ENSEMBLES, *METHODS, *task_names()):
        assert name in out, name
    assert "test-halves (I,D)" in out and "`raytda list`" in out


def test_version(capsys):
    import raytda

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"raytda {raytda.__version__}"


def test_cli_and_python_api_share_the_default_ensembles(tmp_path):
    from raytda.api import DEFAULT_ENSEMBLES

    sweep = build_sweep(parser().parse_args(["sweep", "--out", str(tmp_path)]))
    assert sweep.spec.ensembles == DEFAULT_ENSEMBLES
    assert [e.text for e in DEFAULT_ENSEMBLES] == [
        *(f"naive:I={i}" for i in (1, 2, 3, 5)), *(f"dropout:I={i},D=10" for i in (1, 2, 3, 5))]
