"""Bad input fails with one clear line: exit code 2, a single ``raytda: error:`` line on
stderr, no traceback, and (where the error can be known before work) no output directory
left behind. No Ray needed: an unreachable cluster is caught by a socket probe before Ray
is even imported, and a tune with nothing to search fails before Ray starts."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from raytda.cli import main

BASE = ["sweep", "--setting", "toy-mlp", "--lds-m", "5", "--quiet"]


def closed_port() -> int:
    """A localhost port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def error_line(capsys, argv: list[str]) -> str:
    """Run the CLI; it must fail with exactly one `raytda: error:` line and no traceback."""
    code = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("raytda: error: "), err
    assert "Traceback" not in err
    return lines[0]


def run_failing(capsys, argv: list[str], out: Path) -> str:
    line = error_line(capsys, argv)
    assert not out.exists(), "the output directory was created before the error"
    return line


def test_unknown_axis_in_config(tmp_path, capsys):
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text("settings: [toy-mlp]\nensembles: ['naive:I=1']\nlearning_rates: [0.1]\n")
    out = tmp_path / "out"
    line = run_failing(capsys, [*BASE, "--config", str(cfg), "--out", str(out)], out)
    assert "learning_rates" in line


@pytest.mark.parametrize("grid", ["empty-list", "empty-flag"])
def test_empty_ensemble_grid(tmp_path, capsys, grid):
    out = tmp_path / "out"
    if grid == "empty-list":
        cfg = tmp_path / "sweep.yaml"
        cfg.write_text("settings: [toy-mlp]\nensembles: []\n")
        argv = ["sweep", "--config", str(cfg), "--lds-m", "5", "--out", str(out)]
    else:
        argv = [*BASE, "--ensemble", "", "--out", str(out)]
    line = run_failing(capsys, argv, out)
    assert "ensemble" in line


def test_unreachable_address(tmp_path, capsys):
    out = tmp_path / "out"
    port = closed_port()
    line = run_failing(capsys, [*BASE, "--ensemble", "naive:I=1", "--out", str(out),
                                "--address", f"127.0.0.1:{port}"], out)
    assert f"127.0.0.1:{port}" in line and "ray start --head" in line


def test_dashboard_url_is_not_a_cluster_address(tmp_path, capsys):
    out = tmp_path / "out"
    line = run_failing(capsys, [*BASE, "--ensemble", "naive:I=1", "--out", str(out),
                                "--address", "http://127.0.0.1:8265"], out)
    assert "dashboard" in line


def test_store_not_writable(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    out = tmp_path / "out"
    line = run_failing(capsys, [*BASE, "--ensemble", "naive:I=1", "--out", str(out),
                                "--store", str(blocker / "store")], out)
    assert "not writable" in line


def test_import_raytda_loads_neither_ray_nor_torch():
    import subprocess

    res = subprocess.run([sys.executable, "-X", "importtime", "-c", "import raytda"],
                         capture_output=True, text=True, check=True)
    mods = {ln.split("|")[-1].strip() for ln in res.stderr.splitlines() if "|" in ln}
    assert not {m for m in mods if m.split(".")[0] in ("ray", "torch")}


def test_cuda_device_without_cuda(tmp_path, capsys, monkeypatch):
    """`raytda sweep --device cuda` on a machine without CUDA: one line, nothing written."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    out = tmp_path / "out"
    line = run_failing(capsys, [*BASE, "--ensemble", "naive:I=1", "--out", str(out),
                                "--device", "cuda"], out)
    assert "CUDA is not available" in line


@pytest.mark.parametrize("name, text, needle", [
    ("sweep.json", "{bad json", "not valid JSON"),
    ("sweep.yaml", "- toy-mlp\n- naive:I=1\n", "mapping of sweep keys at its top level"),
    ("sweep.yaml", "settings: [toy-mlp]\nlds: m=5\n", "'lds' must be a mapping"),
    ("sweep.yaml", "settings: 7\n", "'settings' must be a name or a list of names"),
    ("sweep.yaml", "settings: [toy-mlp]\nsettings: [digits-mlp]\n", "given twice"),
    ("sweep.yaml", "methods: [{name: trak, bogus: 1}]\n", "unknown field(s) ['bogus']"),
])
def test_bad_config_file(tmp_path, capsys, name, text, needle):
    cfg = tmp_path / name
    cfg.write_text(text)
    out = tmp_path / "out"
    line = run_failing(capsys, [*BASE, "--ensemble", "naive:I=1", "--config", str(cfg),
                                "--out", str(out)], out)
    assert needle in line
    if "unknown field" not in needle:  # the file's own shape: the file is named
        assert str(cfg) in line


@pytest.mark.parametrize("argv, needle", [
    (["--cost", "bogus"], "unknown cost axis 'bogus'"),
    (["--store", "foo://x"], "cannot open store 'foo://x'"),
    (["--memory-budget", "lots"], "--memory-budget 'lots' is not a positive size"),
    (["--ensemble", "naive:I=1,I=2"], "I is given twice"),
    (["--ensemble", "dropout:I=1,D=2,D=3"], "D is given twice"),
])
def test_bad_flag_fails_before_any_work(tmp_path, capsys, argv, needle):
    out = tmp_path / "out"
    line = run_failing(capsys, [*BASE, "--ensemble", "naive:I=1", *argv, "--out", str(out)], out)
    assert needle in line


def test_duplicate_ensemble_field_through_the_api():
    from raytda.ensembles import parse_ensemble
    from raytda.specs import SpecError

    with pytest.raises(SpecError, match="I is given twice"):
        parse_ensemble("naive:I=1,I=2")


@pytest.mark.parametrize("argv, needle", [
    (["--num-samples", "0"], "--num-samples must be >= 1"),
    (["--concurrent", "0"], "--concurrent must be >= 1"),
    (["--cost", "bogus"], "unknown cost axis"),
])
def test_tune_without_a_search_fails_before_ray(tmp_path, capsys, argv, needle):
    out = tmp_path / "out"
    line = run_failing(capsys, ["tune", "--setting", "toy-mlp", *argv, "--out", str(out)], out)
    assert needle in line


def test_damaged_mnist_file(tmp_path, capsys):
    import gzip

    from raytda.data.mnist import FILES

    data = tmp_path / "mnist"
    data.mkdir()
    for stem in FILES.values():  # gzip streams cut short: no file can be read
        (data / (stem + ".gz")).write_bytes(gzip.compress(b"\0" * 4096)[:40])
    out = tmp_path / "out"
    line = run_failing(capsys, ["sweep", "--setting", "mnist-mlp", "--data-dir", str(data),
                                "--quiet", "--out", str(out)], out)
    assert "train-images-idx3-ubyte.gz" in line


def test_report_on_a_damaged_results_file(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.parquet").write_bytes(b"PAR1 this is not parquet")
    line = error_line(capsys, ["report", str(run)])
    assert "is not a readable results file" in line
    (run / "results.parquet").unlink()
    import pandas as pd

    pd.DataFrame({"x": [1]}).to_parquet(run / "results.parquet")
    assert "is not a raytda results file" in error_line(capsys, ["report", str(run)])
    assert "unknown cost axis" in error_line(capsys, ["report", str(run), "--cost", "x"])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A tiny finished sweep (attribution only): results.parquet and its store."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["sweep", "--setting", "toy-mlp", "--ensemble", "naive:I=1", "--proj-dim",
                 "8", "--no-lds", "--quiet", "--out", str(out)]) == 0
    return out


def test_scores_of_a_corrupt_artifact(finished_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    # The results file names the store by absolute path: point it at the copy.
    import pandas as pd

    from raytda.results import write_results

    write_results(pd.read_parquet(run / "results.parquet"), run, str(run / "store"))
    chunk = next((run / "store" / "scores").glob("*.st"))
    blob = bytearray(chunk.read_bytes())
    blob[-1] ^= 0xFF  # same size, wrong checksum
    chunk.write_bytes(bytes(blob))
    out = tmp_path / "exported"
    line = error_line(capsys, ["scores", str(run), "--ensemble", "naive:I=1", "--out", str(out)])
    assert "checksum mismatch)" in line and "rerun the sweep" in line
    assert not list(out.glob("*")), "a half-written export was left behind"
    result = next((run / "store" / "result").glob("*.json"))
    result.write_text("{ not json")
    line = error_line(capsys, ["scores", str(run), "--ensemble", "naive:I=1", "--out", str(out)])
    assert "is corrupt (record is not valid JSON)" in line and line.count("rebuild") == 1


@pytest.mark.parametrize("error", ["store", "corrupt"])
def test_store_errors_during_a_sweep_are_one_line(tmp_path, capsys, monkeypatch, error):
    """A full disk (the store raises StoreError for ENOSPC) or an artifact that cannot be
    repaired ends the sweep with one line, whatever the error's own line breaks."""
    from raytda.run.local import InProcessExecutor
    from raytda.store import ArtifactStore, CorruptArtifact, StoreError

    def put(self, key, *a, **kw):
        raise StoreError(f"cannot write {key}:\n[Errno 28] No space left on device")

    def execute(self, plan, store):  # what a repair that keeps failing ends in
        raise CorruptArtifact(plan.todo[0].key, "checksum mismatch")

    if error == "store":
        monkeypatch.setattr(ArtifactStore, "put", put)
    else:
        monkeypatch.setattr(InProcessExecutor, "execute", execute)
    line = error_line(capsys, [*BASE, "--ensemble", "naive:I=1", "--proj-dim", "8", "--no-lds",
                               "--out", str(tmp_path / "out")])
    assert ("No space left on device" if error == "store" else "checksum mismatch") in line
    assert not (tmp_path / "out" / "results.parquet").exists()
