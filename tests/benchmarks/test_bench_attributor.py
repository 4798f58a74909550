"""The Attributor benchmark runs end to end at a tiny size (so it cannot rot unnoticed)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MNIST_DIR = ROOT / ".." / "shared" / "data" / "mnist"
TINY = ["--n-train", "100", "--n-test", "10", "--epochs", "1", "--proj-dim", "64",
        "--batch", "10", "--repeats", "1"]

pytestmark = pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"no shared MNIST at {MNIST_DIR}")


def test_table_prints_one_row_per_configuration(load_benchmark, capsys):
    assert load_benchmark("bench_attributor").main(["--data-dir", str(MNIST_DIR), *TINY]) == 0
    out = capsys.readouterr().out
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()
            if line.startswith("| naive") or line.startswith("| dropout")]
    assert [r[0] for r in rows] == ["naive I=1", "dropout I=1 D=10"]
    assert [r[1] for r in rows] == ["1", "10"]
    for r in rows:  # ratios are measured numbers, resident memory is positive
        assert r[7].endswith("x") and float(r[7][:-1]) > 0
        assert float(r[9]) > 0
