"""Ground truth the user already has gives the same LDS as raytda's own retraining."""

from __future__ import annotations

import numpy as np
import pytest

from raytda import GroundTruth, LDSSpec, Sweep
from raytda.core.lds import lds_subsets
from raytda.specs import SpecError


def test_user_ground_truth_reproduces_raytdas_lds(tmp_path):
    lds = LDSSpec(m=5)
    ours = Sweep("toy-mlp", "trak", ["naive:I=1", "dropout:I=1,D=2"], lds=lds, proj_dim=8,
                 store=str(tmp_path), progress=False)
    df = ours.run()
    ev = ours.spec.evaluations()[0]
    truth = np.stack([ours.store.get(m.key)[0]["test_margins"].numpy() for m in ev.lds_models()])
    subsets = lds_subsets(60, lds)
    as_rows = [np.flatnonzero(s) for s in subsets]  # index lists work as well as masks
    theirs = Sweep("toy-mlp", "trak", ["naive:I=1", "dropout:I=1,D=2"],
                   lds=GroundTruth(as_rows, truth), proj_dim=8, store=str(tmp_path),
                   progress=False)
    plan = theirs.plan()
    assert {j.kind for j in plan.todo} == {"result"}  # models and blocks are shared
    again = theirs.run()
    np.testing.assert_allclose(again["lds"], df["lds"], rtol=1e-12)


def test_ground_truth_needs_three_subsets():
    with pytest.raises(SpecError, match="at least 3 subsets"):
        GroundTruth(np.ones((2, 4), dtype=bool), np.zeros((2, 3)))
