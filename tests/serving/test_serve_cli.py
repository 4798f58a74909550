"""`raytda serve` flags: mistakes fail as one line (exit 2) before Ray starts, and the
subcommand costs `raytda`'s parser no heavy imports. (The served CLI itself is tested in
test_serve_app.py, against the session's Ray runtime.)"""

from __future__ import annotations

import subprocess
import sys

import pytest

from raytda.cli import main

TOY = ["--setting", "toy-mlp", "--proj-dim", "16", "--no-lds"]


def test_building_the_parser_loads_neither_ray_nor_torch():
    code = "import sys; from raytda.cli import parser; parser(); " \
           "print(sorted(m for m in ('ray', 'torch') if m in sys.modules))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert res.stdout.strip() == "[]"


@pytest.mark.parametrize("flags, needle", [
    (["--ensemble", "dropout:I=1|2,D=3"], "name 2 configurations"),
    (["--ensemble", "dropout:I=1,D=3", "--method", "trak", "--method", "grad-dot"],
     "name 2 configurations"),
    (["--ensemble", "dropout:I=1,D=3", "--port", "0"], "port must be in 1..65535"),
    (["--ensemble", "dropout:I=1,D=3", "--replicas", "0"], "replicas must be >= 1"),
    (["--ensemble", "dropout:I=1,D=3", "--max-batch-size", "0"], "max batch size must be"),
    (["--ensemble", "dropout:I=1,D=3", "--batch-wait-ms", "-1"], "batch wait must be >= 0"),
    (["--ensemble", "dropout:I=1,D=3"], "has not run in store"),
    (["--ensemble", "naive:I=1", "--method", "grad-cos"], "cannot attribute new inputs"),
])
def test_mistakes_are_one_line_before_ray_starts(tmp_path, capsys, flags, needle):
    def ray_up() -> bool:  # another module's session runtime may be up already
        return "ray" in sys.modules and sys.modules["ray"].is_initialized()

    before = ray_up()
    assert main(["serve", *TOY, "--out", str(tmp_path), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("raytda: error: ") and needle in err and "\n" not in err
    assert ray_up() == before
