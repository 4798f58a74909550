"""Two variants of one method in a sweep (TRAK at two k): every place a configuration is
named (results table, Sweep.scores, plots, `raytda scores`) tells them apart."""

from __future__ import annotations

import pytest
import torch

from raytda import LDSSpec, Sweep
from raytda.cli import main
from raytda.methods import Method
from raytda.results import format_table, write_results
from raytda.specs import SpecError

SMALL, LARGE = Method("trak", proj_dim=8), Method("trak", proj_dim=16)


def test_a_label_names_what_differs_from_the_method_defaults():
    assert Method("trak").label == "trak"
    assert Method("trak", proj_dim=8).label == "trak proj_dim=8"
    assert Method("trak", features="factorized").label == \
        "trak features=factorized:uncovered=dense"
    assert Method("if", damping=0.1, curvature="hessian").label == \
        "if damping=0.1,curvature=hessian"
    assert Method("grad-cos", proj_dim=99).label == "grad-cos"  # not one of its parameters


@pytest.fixture(scope="module")
def two_k(tmp_path_factory):
    root = tmp_path_factory.mktemp("variants")
    sweep = Sweep("toy-mlp", [SMALL, LARGE], ["naive:I=1"], lds=LDSSpec(m=4),
                  store=str(root / "store"), progress=False)
    table = sweep.run()
    write_results(table, root / "run", sweep.store.uri)
    return sweep, table, root


def test_results_and_scores_tell_the_variants_apart(two_k):
    sweep, table, _ = two_k
    assert sorted(table["method_label"]) == ["trak proj_dim=16", "trak proj_dim=8"]
    text = format_table(table)
    assert "trak proj_dim=8 " in text and "trak proj_dim=16 " in text
    small = sweep.scores("naive:I=1", method=SMALL)
    assert torch.equal(small, sweep.scores("naive:I=1", method="trak proj_dim=8"))
    assert not torch.equal(small, sweep.scores("naive:I=1", method=LARGE))
    with pytest.raises(SpecError, match="more than one.*'trak proj_dim=16'"):
        sweep.scores("naive:I=1", method="trak")


def test_plots_and_exports_do_not_overwrite_each_other(two_k, capsys):
    sweep, _, root = two_k
    plots = sweep.plot(root / "plots")
    assert len({p.name for p in plots}) == 2
    run = str(root / "run")
    assert main(["scores", run, "--ensemble", "naive:I=1", "--method", "trak"]) == 2
    assert "'trak proj_dim=8'" in capsys.readouterr().err
    for method in ("trak proj_dim=8", "trak proj_dim=16"):
        assert main(["scores", run, "--ensemble", "naive:I=1", "--method", method,
                     "--top-k-only"]) == 0
    assert len(list((root / "run").glob("topk_*.parquet"))) == 2
