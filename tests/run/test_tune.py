"""Ray Tune adapter: trials run the sweep's cached jobs through one shared store."""

from __future__ import annotations

import pytest
from ray_helpers import counts, make_sweep

from raytda.ensembles import Ensemble
from raytda.methods import Method
from raytda.run.tune import config_to_ensemble, tune_ensembles
from raytda.specs import LDSSpec

pytestmark = pytest.mark.ray


def test_config_to_ensemble_drops_unused_fields():
    assert config_to_ensemble({"kind": "naive", "I": 2, "D": 10}) == Ensemble("naive", 2)
    assert config_to_ensemble({"kind": "dropout", "I": 2, "D": 3}) == Ensemble("dropout", 2, 3)


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_trials_share_cached_jobs(ray_session, tmp_path, reference, executor):
    from ray import tune

    store = tmp_path / "store"
    # The reference sweep's method and LDS, so results can be compared label by label.
    spec = make_sweep(tmp_path / "unused").spec
    space = ({"kind": "naive", "I": tune.grid_search([2, 1])} if executor == "local" else
             {"kind": "dropout", "I": tune.grid_search([1, 2]), "D": 3})
    df = tune_ensembles(spec.tasks[0], str(store), method=spec.methods[0], lds=spec.lds,
                        space=space, num_samples=1, search_alg=None, executor=executor,
                        storage_path=str(tmp_path / "tune"))
    assert len(df) == 2 and "pareto" in df and df["pareto"].any()
    for label, lds in zip(df["label"], df["lds"], strict=True):
        assert lds == reference[0][label]
    n = counts(__import__("raytda").ArtifactStore(str(store)))
    # Two trials, yet each model and LDS model was trained once: I_max models, m LDS ones.
    assert n["model"] == 2 and n["ldsmodel"] == spec.lds.m and n["result"] == 2
    assert df["jobs_run"].sum() == sum(v for k, v in n.items() if k != "scores")


def test_default_space_runs_adaptive_search(ray_session, tmp_path):
    pytest.importorskip("optuna")
    from raytda.settings import get_setting

    df = tune_ensembles(get_setting("toy-mlp"), str(tmp_path / "store"),
                        method=Method("trak", proj_dim=16), lds=LDSSpec(m=5), num_samples=3,
                        storage_path=str(tmp_path / "tune"))
    assert len(df) == 3 and df["pareto"].any()
    n = counts(__import__("raytda").ArtifactStore(str(tmp_path / "store")))
    assert n["ldsmodel"] == 5 and n["model"] <= 5  # shared, whatever configs were sampled
