"""One sweep, several methods and kinds: pairs that cannot run together are skipped with
one line each, explicit pairs run exactly, and scores are read back by label or spec."""

from __future__ import annotations

import logging

import pandas as pd
import pytest
import torch

from raytda import LDSSpec, Sweep
from raytda.cli import main
from raytda.specs import SpecError

METHODS = ["trak", "grad-dot", "if"]
KINDS = ["naive:I=1", "dropout:I=1,D=2", "dropout-forward:I=1,D=2"]


def test_one_sweep_runs_every_pair_that_can_run(tmp_path, caplog, one_torch_thread):
    with caplog.at_level(logging.WARNING, logger="raytda.plan.planner"):
        sweep = Sweep("toy-mlp", METHODS, KINDS, lds=LDSSpec(m=3), store=str(tmp_path),
                      proj_dim=16, progress=False)
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping")]
    # Q weighting is TRAK's: the forward-only kind runs with TRAK alone
    assert len(skipped) == 2 and all("dropout-forward" in line for line in skipped)
    assert all("\n" not in line for line in skipped)
    table = sweep.run()
    assert len(table) == 7
    assert set(zip(table["method"], table["label"])) == {
        (m, k) for m in METHODS for k in ("naive I=1", "dropout I=1 D=2")
    } | {("trak", "dropout-forward I=1 D=2")}
    # scores by the label the table shows, or by the spec string: the same configuration
    by_label = sweep.scores("dropout I=1 D=2", method="if")
    assert torch.equal(by_label, sweep.scores("dropout:I=1,D=2", method="if"))


def test_explicit_pairs_run_exactly_those(tmp_path):
    sweep = Sweep("toy-mlp", lds=None, store=str(tmp_path), proj_dim=16, progress=False,
                  configurations=[("trak", "dropout-forward:I=1,D=2"), ("if", "naive:I=1")])
    assert [(e.method.name, e.ensemble.label) for e in sweep.spec.evaluations()] == [
        ("trak", "dropout-forward I=1 D=2"), ("if", "naive I=1")]
    with pytest.raises(SpecError, match="needs TRAK's Q weighting"):
        Sweep("toy-mlp", lds=None, store=str(tmp_path), progress=False,
              configurations=[("grad-dot", "dropout-forward:I=1,D=2")])
    with pytest.raises(SpecError, match="not both"):
        Sweep("toy-mlp", ["if"], lds=None, store=str(tmp_path), progress=False,
              configurations=[("if", "naive:I=1")])


def test_one_cli_call_runs_the_mixed_grid(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["sweep", "--setting", "toy-mlp", "--store", str(tmp_path / "store"),
            "--out", str(out), "--lds-m", "3", "--proj-dim", "16", "--quiet"]
    for m in METHODS:
        args += ["--method", m]
    for k in KINDS:
        args += ["--ensemble", k]
    assert main(args) == 0
    table = pd.read_parquet(out / "results.parquet")
    assert len(table) == 7
    assert set(table[table.ensemble == "dropout-forward"].method) == {"trak"}


def test_cli_configuration_pairs(tmp_path):
    out = tmp_path / "out"
    assert main(["sweep", "--setting", "toy-mlp", "--store", str(tmp_path / "store"),
                 "--out", str(out), "--no-lds", "--proj-dim", "16", "--quiet",
                 "--configuration", "trak@dropout-forward:I=1,D=2",
                 "--configuration", "grad-dot@naive:I=1|2"]) == 0
    table = pd.read_parquet(out / "results.parquet")
    assert sorted(zip(table["method"], table["label"])) == [
        ("grad-dot", "naive I=1"), ("grad-dot", "naive I=2"), ("trak", "dropout-forward I=1 D=2")]


@pytest.mark.parametrize("bad, why", [
    (["--configuration", "trak-dropout:I=1,D=2"], "not METHOD@ENSEMBLE"),
    (["--configuration", "trak@naive:I=1", "--method", "if"], "not both"),
    (["--configuration", "grad-dot@dropout-forward:I=1,D=2"], "Q weighting"),
])
def test_cli_configuration_mistakes_are_one_line(tmp_path, capsys, bad, why):
    assert main(["sweep", "--setting", "toy-mlp", "--store", str(tmp_path / "store"),
                 "--out", str(tmp_path / "out"), "--no-lds", "--quiet", *bad]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("raytda: error:") and why in err[0]
    assert not (tmp_path / "store").exists()
