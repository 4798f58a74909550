"""Bad sweeps fail before any work with one clear line: exit code 2, a single
``raytda: error:`` line on stderr, and no output directory left behind. No Ray needed:
an unreachable cluster is caught by a socket probe before Ray is even imported."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest

from raytda.cli import main

BASE = ["sweep", "--setting", "toy-mlp", "--lds-m", "5", "--quiet"]


def closed_port() -> int:
    """A localhost port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_failing(capsys, argv: list[str], out: Path) -> str:
    t0 = time.monotonic()
    code = main(argv)
    elapsed = time.monotonic() - t0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("raytda: error: "), err
    assert not out.exists(), "the output directory was created before the error"
    assert elapsed < 10, f"took {elapsed:.1f} s to fail"
    return lines[0]


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
