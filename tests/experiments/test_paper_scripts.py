"""The paper-result scripts run end to end at a tiny scale, re-render from the store with
--cached-only, write their table and plot, and reject bad flags with one line."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pandas as pd
import pytest

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
# /work/<checkout>/tests/experiments -> /work/shared/data; a worktree deeper down sets RAYTDA_DATA
DATA = Path(os.environ.get("RAYTDA_DATA") or Path(__file__).parents[3] / "shared" / "data")
TINY_MT = ["--set", "n_train=12", "--set", "n_test=2", "--set", "seq_len=8", "--set", "n_layer=1",
           "--set", "n_head=2", "--set", "d_model=8", "--set", "d_ff=16", "--set", "epochs=2",
           "--set", "batch_size=6"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


def script(name: str) -> ModuleType:
    """An experiment script, importing experiments/common.py as its sibling ``common``
    even when another ``common`` (e.g. benchmarks') is already imported in this session,
    and the sibling scripts it builds on (figure4 on figure1, figure5 on figure3)."""
    saved = sys.modules.get("common")
    sys.modules["common"] = load("experiments_common", EXPERIMENTS / "common.py")
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        return load(f"paper_{name}", EXPERIMENTS / f"{name}.py")
    finally:
        sys.path.remove(str(EXPERIMENTS))
        for sibling in ("figure1_dropout", "figure3_lora"):
            sys.modules.pop(sibling, None)
        if saved is None:
            sys.modules.pop("common", None)
        else:
            sys.modules["common"] = saved


def flags(tmp_path: Path, *more: str) -> list[str]:
    return ["--out", str(tmp_path / "out"), "--store", str(tmp_path / "store"), "--lds-m", "3",
            "--proj-dim", "8", "--device", "cpu", *more]


def test_figure3_lora_runs_renders_cached_and_feeds_tables3_7(tmp_path):
    if not (DATA / "maestro").is_dir():
        pytest.skip("MAESTRO not found")
    f3 = script("figure3_lora")
    argv = flags(tmp_path, "--data-root", str(DATA), "--I", "1,3,5", "--L", "1,3", *TINY_MT)
    assert f3.main(argv) == 0
    out = tmp_path / "out"
    df = pd.read_parquet(out / "figure3_lora.parquet")
    assert sorted(df.label) == sorted(["naive I=1", "naive I=3", "naive I=5", "lora I=1 L=1",
                                       "lora I=1 L=3"])
    text = (out / "figure3_lora.md").read_text()
    assert "(78.4%)" in text and "(60.5%)" in text and "(79.6%)" in text  # the paper beside ours
    assert "further, for every task (--set)" in text and (out / "figure3_lora_maestro-mt.png").is_file()
    assert "d_model" in text and "one adapter" in text.lower()
    (out / "figure3_lora.md").unlink()
    assert f3.main([*argv, "--cached-only"]) == 0  # nothing to compute: renders from the store
    rendered = (out / "figure3_lora.md").read_text()
    assert "--cached-only" in rendered and "Command: `python experiments/figure3_lora.py --out" in rendered
    t37 = script("tables3_7_costs")
    assert t37.main(["--out", str(out), "--data-root", str(DATA), "--setting", "maestro-mt"]) == 0
    costs = (out / "tables3_7_costs.md").read_text()
    assert "13,113,732" in costs and "(13.41M)" in costs and "(13.11M)" in costs
    assert "from maestro-mt's measured unit costs" in costs


def test_figure1_and_table2_on_a_toy_setting(tmp_path):
    f1 = script("figure1_dropout")
    assert f1.main(flags(tmp_path, "--setting", "toy-mlp", "--I", "1,2", "--D", "2")) == 0
    df = pd.read_parquet(tmp_path / "out" / "figure1_dropout.parquet")
    assert set(df.ensemble) == {"naive", "dropout", "dropout-forward"}
    assert (tmp_path / "out" / "figure1_dropout.png").is_file()
    t2 = script("table2_checkpoints")
    assert t2.main(flags(tmp_path, "--setting", "toy-mlp", "--D", "2")) == 0
    text = (tmp_path / "out" / "table2_checkpoints.md").read_text()
    assert "(0.122)" in text and "(0.342)" not in text  # D = 25 not run, D = 10 not run
    df = pd.read_parquet(tmp_path / "out" / "table2_checkpoints.parquet")
    assert sorted(df.C.unique()) == [1, 3, 5]


def test_figure4_on_mnist_resnet9_names_its_scale_and_the_papers(tmp_path):
    if not (DATA / "mnist").is_dir():
        pytest.skip("MNIST not found")
    f4 = script("figure4_scaled_dropout")
    argv = flags(tmp_path, "--data-root", str(DATA), "--setting", "mnist-resnet9", "--I", "1,2",
                 "--D", "2", "--set", "n_train=12", "--set", "n_test=2", "--set", "epochs=1",
                 "--set", "batch_size=6")
    assert f4.main(argv) == 0
    out = tmp_path / "out"
    df = pd.read_parquet(out / "figure4_scaled_dropout.parquet")
    assert set(df.ensemble) == {"naive", "dropout"} and set(df.I) == {1, 2}
    assert set(df.setting) == {"mnist-resnet9"}  # the parquet keeps the name tables3_7 reads
    text = (out / "figure4_scaled_dropout.md").read_text()
    # every row says the scale it ran at, and every reduction names the paper's setup
    assert "| mnist-resnet9 (12 / 2, 1 epochs) |" in text and "60K training images" in text
    assert (out / "figure4_scaled_dropout.png").is_file()
    # its CPU scale's ridge (APPENDIX_J_CPU_METHOD) reaches the method, and the reduction
    # says so: without it TRAK at k ~ n gives LDS 0 on this setting
    assert all("ridge_scale=3.0" in label for label in df.method_label)
    assert "TRAK ridge 3 x" in text


def test_figure5_runs_the_appendix_j_scale_and_shares_figure3s_tables(tmp_path):
    if not (DATA / "maestro").is_dir():
        pytest.skip("MAESTRO not found")
    f5 = script("figure5_scaled_lora")
    argv = flags(tmp_path, "--data-root", str(DATA), "--setting", "maestro-mt", "--I", "1,2",
                 "--L", "1", *TINY_MT)
    assert f5.main(argv) == 0
    out = tmp_path / "out"
    assert sorted(pd.read_parquet(out / "figure5_scaled_lora.parquet").label) == [
        "lora I=1 L=1", "naive I=1", "naive I=2"]
    text = (out / "figure5_scaled_lora.md").read_text()
    assert "## maestro-mt (12 / 2, 2 epochs)" in text and "15K training sequences" in text
    assert "Table 7" in text and (out / "figure5_scaled_lora_maestro-mt.png").is_file()


def test_appendix_j_scales():
    common = load("experiments_common", EXPERIMENTS / "common.py")
    a = SimpleNamespace(full=True, overrides={}, data_dirs={})
    mt = common.appendix_j_task("maestro-mt", a)
    assert mt.settings["n_train"] == 15000 and mt.settings["d_model"] == 512
    rn = common.appendix_j_task("mnist-resnet9", a)
    assert rn.settings["n_train"] == 60000 and common.at_paper_scale(rn)
    a.full = False
    assert common.appendix_j_task("maestro-mt", a).settings["n_train"] == 800
    cpu_rn = common.appendix_j_task("mnist-resnet9", a)
    assert not common.at_paper_scale(cpu_rn)
    # the CPU recipe that trains it in 4 epochs, the paper's (--full) SGD otherwise
    assert (cpu_rn.recipe.optimizer, cpu_rn.recipe.lr, cpu_rn.recipe.epochs) == ("adam", 5e-3, 4)
    assert rn.recipe.optimizer == "sgd"
    # --set wins over a script's own scale
    a.overrides = {"n_train": 7}
    assert common.appendix_j_task("maestro-mt", a).settings["n_train"] == 7
    # Figure 1 shows Table 1 beside mnist-mlp only at Table 1's scale, not at its CPU one
    a.overrides = {}
    assert not common.at_paper_scale(common.task_for("mnist-mlp", a))
    a.full = True
    assert common.at_paper_scale(common.task_for("mnist-mlp", a))


@pytest.mark.parametrize(("argv", "words"), [
    (["--set", "bogus=1", "--setting", "toy-mlp"], ("bogus",)),
    (["--set", "novalue", "--setting", "toy-mlp"], ("KEY=VALUE",)),
    (["--data-root", "/nonexistent", "--setting", "maestro-mt"], ("/nonexistent/maestro",)),
    (["--setting", "nope"], ("nope",)),
])
def test_bad_flags_fail_with_one_line_before_any_work(tmp_path, capsys, argv, words):
    out = tmp_path / "out"
    assert script("figure6_methods").main([*argv, "--out", str(out), "--device", "cpu"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("figure6_methods.py: error: "), err
    assert all(w in err[0] for w in words), err[0]
    assert not out.exists()


def test_figure6_passes_its_if_and_ekfac_flags_each_into_its_own_method(tmp_path):
    f6 = script("figure6_methods")
    argv = flags(tmp_path, "--setting", "toy-mlp", "--I", "1", "--D", "2", "--methods",
                 "if,ekfac,grad-dot", "--if-cg-max-iter", "3", "--if-damping", "0.01",
                 "--if-curvature", "hessian", "--naive-I", "2", "--ekfac-damping", "0.05",
                 "--ekfac-fisher", "empirical")
    assert f6.main(argv) == 0
    df = pd.read_parquet(tmp_path / "out" / "figure6_methods.parquet")
    assert set(df.method) == {"if", "ekfac", "grad-dot"}
    assert set(df.ensemble) == {"naive", "dropout"}
    assert set(df[df.ensemble == "naive"].I) == {1, 2} and set(df[df.ensemble == "dropout"].I) == {1}
    assert "at most 3 conjugate-gradient iterations" in (tmp_path / "out" / "figure6_methods.md").read_text()
    from raytda.store import ArtifactStore

    store = ArtifactStore(str(tmp_path / "store"))
    blocks = [m for m in map(store.meta, store.keys()) if m and "cg_iterations" in m]
    assert blocks and all(m["cg_iterations"] <= 3 and m["damping"] == 0.01
                          and m["curvature"] == "hessian" for m in blocks)
    metas = [m for m in map(store.meta, store.keys()) if m]
    ekfac = [m for m in metas if "ekfac_score_s" in m]
    fits = [m for m in metas if "ekfac_fit_s" in m]
    assert ekfac and all(m["damping"] == 0.05 for m in ekfac)
    assert fits and all(m["fisher"] == "empirical" for m in fits)


def test_a_script_runs_unchanged_on_ray_with_the_same_results(tmp_path, ray_session):
    f1 = script("figure1_dropout")
    argv = ["--setting", "toy-mlp", "--I", "1,2", "--D", "2"]
    assert f1.main(flags(tmp_path / "local", *argv)) == 0
    assert f1.main(flags(tmp_path / "ray", *argv, "--executor", "ray")) == 0
    local, on_ray = (pd.read_parquet(tmp_path / d / "out" / "figure1_dropout.parquet")
                     .sort_values("label").reset_index(drop=True) for d in ("local", "ray"))
    assert list(local.label) == list(on_ray.label) and len(local) == 5
    assert (local.lds == on_ray.lds).all()
    assert "executor ray" in (tmp_path / "ray" / "out" / "figure1_dropout.md").read_text()
