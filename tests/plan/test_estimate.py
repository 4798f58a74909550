"""Before a sweep runs, one line says what it will cost: the jobs, the disk (within a
small factor of what the run writes) and, once the store has timed jobs like them, the
time."""

from __future__ import annotations

import re
from pathlib import Path

from raytda.api import Sweep
from raytda.cli import main
from raytda.plan.estimate import format_bytes
from raytda.specs import LDSSpec

SIZE = re.compile(r"about ([\d.]+) (B|kB|MB|GB) on disk")
UNITS = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}


def disk_of(line: str) -> float:
    m = SIZE.search(line)
    assert m, line
    return float(m.group(1)) * UNITS[m.group(2)]


def store_bytes(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


def test_format_bytes():
    assert [format_bytes(n) for n in (999, 1234, 2.3e9)] == ["999 B", "1.2 kB", "2.3 GB"]


def test_the_line_comes_before_the_run_and_its_disk_is_close(tmp_path, capsys):
    store = tmp_path / "store"
    sweep = Sweep("toy-mlp", ensembles=["naive:I=1", "naive:I=2", "dropout:I=1,D=2"],
                  lds=LDSSpec(m=5), store=str(store), proj_dim=8)
    sweep.run()
    err = capsys.readouterr().err
    line = next(ln for ln in err.splitlines() if "to run: " in ln)
    assert err.index(line) < err.index(" jobs done, "), "the estimate comes first"
    assert re.search(r"(^| )raytda: to run: 18 jobs ", line), line
    assert "5 ldsmodel" in line and "2 model" in line and "time known once jobs like these are timed" in line
    # Shapes and records, against what the run wrote: 0.89 of it when measured here (the
    # safetensors headers are not counted); a factor of 2 either way is the bound.
    written = store_bytes(store)
    print(f"estimated {disk_of(line):.0f} B, written {written} B")
    assert written / 2 < disk_of(line) < written * 2, (line, written)

    # A larger sweep on the same store: its time comes from the jobs the store timed.
    more = Sweep("toy-mlp", ensembles=["naive:I=3"], lds=LDSSpec(m=5), store=str(store),
                 proj_dim=8, progress=False)
    est = more.estimate()
    assert est.jobs == {"model": 1, "q": 1, "block": 1, "result": 1}
    assert est.seconds is not None and est.seconds > 0 and est.measured_classes == 3
    assert "not known" not in est.line()


def test_plan_prints_the_line(tmp_path, capsys):
    assert main(["plan", "--out", str(tmp_path / "out"), "--setting", "toy-mlp",
                 "--proj-dim", "8", "--lds-m", "5", "--ensemble", "naive:I=1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("to run: ") and "on disk" in out[-1], out
    assert not (tmp_path / "out").exists(), "planning writes nothing"


def test_quiet_sweeps_print_no_estimate(tmp_path, capsys):
    sweep = Sweep("toy-mlp", ensembles=["naive:I=1"], lds=None, store=str(tmp_path / "s"),
                  proj_dim=8, progress=False)
    sweep.run()
    assert "to run: " not in capsys.readouterr().err
