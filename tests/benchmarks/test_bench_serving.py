"""The serving benchmark runs end to end at a tiny size (so it cannot rot unnoticed)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MNIST_DIR = ROOT / ".." / "shared" / "data" / "mnist"
TINY = ["--n-train", "64", "--n-test", "8", "--epochs", "1", "--proj-dim", "32",
        "--grad-batch", "16", "--sweep-max-i", "2", "--sweep-d", "2", "--sweep-epochs", "1",
        "--no-bf16"]

pytestmark = pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"no shared MNIST at {MNIST_DIR}")


@pytest.fixture
def run(load_benchmark, capsys):
    def run(argv: list[str]) -> str:
        bench = load_benchmark("bench_serving")
        assert bench.main(["--data-dir", str(MNIST_DIR), *TINY, *argv]) == 0
        return capsys.readouterr().out

    return run


def test_serving_and_sweep_tables_without_dattri(run):
    out = run(["--skip-dattri", "--sweep"])
    assert "GFLOP/s" in out
    # raytda shares work: 2 trainings and 2 naive + 4 dropout members for the 4 configurations
    row = next(line for line in out.splitlines() if line.startswith("| raytda (shared work)"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:3] == ["2", "6"]


def test_dattri_loop_does_the_plain_loops_work(run):
    pytest.importorskip("dattri")
    out = run(["--skip-serving", "--sweep", "--with-dattri-sweep", "--dattri-batches", "32"])
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()
            if line.startswith("| dattri loop")]
    assert [r[-1].split(" (")[0] for r in rows] == ["estimated from one member", "measured"]
    # every configuration from scratch: 1+2 trainings per kind, 1+2+2+4 member servings
    assert all(r[1:3] == ["6", "9"] for r in rows)
