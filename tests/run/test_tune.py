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


class _Trial:
    """Records what an Optuna define-by-run space asks for."""

    def __init__(self, kind: str) -> None:
        self.kind, self.asked = kind, {}

    def suggest_categorical(self, name, choices):
        self.asked[name] = choices
        return self.kind if name == "kind" else choices[0]

    def suggest_int(self, name, lo, hi):
        self.asked[name] = (lo, hi)
        return lo


def test_conditional_space_asks_only_what_a_kind_takes():
    from raytda.run.tune import define_space, search_kinds
    from raytda.settings import get_setting
    from raytda.tasks import SettingTask

    toy = SettingTask(get_setting("toy-mlp"))
    kinds = search_kinds(toy)
    assert "naive" in kinds and "dropout" in kinds
    assert ("lora" in kinds) == (toy.lora is not None and toy.recipe is not None)
    asked = {}
    for kind in ("naive", "dropout", "lora"):
        t = _Trial(kind)
        define_space(t, [*kinds, "lora"])
        asked[kind] = set(t.asked)
        ens = config_to_ensemble({"kind": kind, "I": 1,
                                  **{k: v[0] for k, v in t.asked.items()
                                     if k not in ("kind", "I")}})
        assert ens.kind == kind
    assert asked["naive"] == {"kind", "I"}
    assert asked["dropout"] == {"kind", "I", "D_dropout"}
    assert asked["lora"] == {"kind", "I", "L_lora"}
    assert config_to_ensemble({"kind": "dropout", "I": 2, "D_dropout": 3, "L": None}) == \
        Ensemble("dropout", 2, 3)


def test_random_space_has_no_unused_fields():
    from raytda.run.tune import space_configs

    configs = space_configs()
    assert {c["kind"] for c in configs} == {"naive", "dropout"}
    for c in configs:
        assert set(c) == ({"kind", "I"} if c["kind"] == "naive" else {"kind", "I", "D"})
        ens = config_to_ensemble({"ensemble": c})
        assert (ens.kind, ens.I, ens.D) == (c["kind"], c["I"], c.get("D", 1))


def test_search_resumes_from_its_storage(ray_session, tmp_path, reference):
    """A search found at storage_path resumes: its finished trials are kept, not rerun."""
    from ray import tune

    spec = make_sweep(tmp_path / "unused").spec
    kw = dict(method=spec.methods[0], lds=spec.lds, num_samples=1, search_alg=None,
              space={"kind": "naive", "I": tune.grid_search([1, 2])},
              storage_path=str(tmp_path / "tune"), resume=True)
    first = tune_ensembles(spec.tasks[0], str(tmp_path / "store"), **kw)
    again = tune_ensembles(spec.tasks[0], str(tmp_path / "store"), **kw)
    # The same trials, restored with the jobs they ran then (a rerun would run none).
    assert dict(zip(again["result_key"], again["jobs_run"], strict=True)) == \
        dict(zip(first["result_key"], first["jobs_run"], strict=True))
    assert first["jobs_run"].sum() > 0
    for label, lds in zip(again["label"], again["lds"], strict=True):
        assert lds == reference[0][label]


def test_tune_cli_killed_then_resumed(tmp_path):
    """`raytda tune` killed after its first trial, then `--resume`d: the search ends with
    all its trials and no artifact that had been finished is written again."""
    import os
    import signal
    import time

    import pandas as pd
    from ray_helpers import cli, mtimes

    out = tmp_path / "out"
    args = ["tune", "--setting", "toy-mlp", "--num-samples", "3", "--lds-m", "5",
            "--proj-dim", "16", "--random", "--out", str(out)]
    env = {"RAY_ADDRESS": ""}  # a search of its own, not the test session's Ray
    proc = cli(*args, env=env)
    t_end = time.monotonic() + 120
    while time.monotonic() < t_end and proc.poll() is None \
            and not list((out / "store").glob("result/*.json")):
        time.sleep(0.1)
    assert proc.poll() is None, f"search ended before it could be killed: {proc.communicate()}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = mtimes(out / "store")
    again = cli(*args, "--resume", env=env)
    _, err = again.communicate(timeout=240)
    assert again.returncode == 0, err[-3000:]
    df = pd.read_parquet(out / "tune.parquet")
    assert len(df) == 3
    after = mtimes(out / "store")
    for path, stamp in before.items():
        assert after[path] == stamp, f"{path} was recomputed after the restart"
