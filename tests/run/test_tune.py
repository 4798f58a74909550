"""Ray Tune adapter: trials run the sweep's checked path on one shared store, never repeat a
configuration, report what the store held, and print a line per trial."""

from __future__ import annotations

import time

import pytest
from ray_helpers import cli, counts, make_sweep, mtimes

from raytda.ensembles import Ensemble
from raytda.methods import Method
from raytda.specs import LDSSpec
from raytda.tune.search import default_candidates, tune_ensembles

pytestmark = pytest.mark.ray

SMALL = [Ensemble("naive", i) for i in (1, 2, 3)] + [Ensemble("dropout", i, d)
                                                      for i in (1, 2) for d in (1, 3)]


# --------------------------------------------------------------------------- the searcher


def _drain(searcher, cost: str = "train_time_s") -> list[Ensemble]:
    """Ask until FINISHED, answering each trial with a made-up result; the proposals."""
    from ray.tune.search import Searcher

    from raytda.tune.searcher import config_ensemble

    out = []
    for i in range(100):
        config = searcher.suggest(f"t{i}")
        if config == Searcher.FINISHED:
            return out
        e = config_ensemble(config)
        out.append(e)
        searcher.on_trial_complete(f"t{i}", {"lds": 0.1 * e.I - 0.01 * e.D, cost: float(e.I)})
    raise AssertionError("the searcher never finished")


@pytest.mark.parametrize("sampler", ["optuna", "random"])
def test_searcher_proposes_each_unknown_configuration_once(sampler):
    if sampler == "optuna":
        pytest.importorskip("optuna")
    from raytda.tune.searcher import DistinctSearcher

    known = {SMALL[0]: (0.1, 1.0), SMALL[4]: (0.3, 2.0)}
    # A 7-configuration space makes Optuna repeat itself: exactly what must not reach Tune.
    proposed = _drain(DistinctSearcher(SMALL, known, "train_time_s", sampler=sampler))
    assert len(proposed) == len(set(proposed)) == len(SMALL) - len(known)
    assert set(proposed) == set(SMALL) - set(known)


def test_known_results_seed_the_optuna_study():
    pytest.importorskip("optuna")
    from raytda.tune.searcher import DistinctSearcher

    known = {SMALL[0]: (0.1, 1.0), SMALL[4]: (0.3, 2.0), SMALL[5]: (float("nan"), 2.0)}
    s = DistinctSearcher(SMALL, known, "params")
    done = [t for t in s._study.trials if t.state.name == "COMPLETE"]
    # NaN LDS cannot be told to Optuna; the finite ones are there, with their values.
    assert sorted(tuple(t.values) for t in done) == [(0.1, 1.0), (0.3, 2.0)]
    assert SMALL[5] in s.claimed


def test_searcher_state_survives_save_and_restore(tmp_path):
    """What Tune saves for --resume: proposals after a restore do not repeat earlier ones."""
    pytest.importorskip("optuna")
    from raytda.tune.searcher import DistinctSearcher, config_ensemble

    s = DistinctSearcher(SMALL, {}, "train_time_s")
    first = [config_ensemble(s.suggest(t)) for t in ("a", "b", "c")]
    s.on_trial_complete("a", {"lds": 0.2, "train_time_s": 1.0})
    s.save(str(tmp_path / "state.pkl"))
    again = DistinctSearcher(SMALL, {}, "train_time_s", seed=5)
    again.restore(str(tmp_path / "state.pkl"))
    again.on_trial_complete("b", {"lds": 0.1, "train_time_s": 2.0})  # a trial still running
    rest = _drain(again)
    assert set(first).isdisjoint(rest) and set(first) | set(rest) == set(SMALL)


class _Trial:
    """Records what an Optuna define-by-run space asks for."""

    def __init__(self, kind: str) -> None:
        self.kind, self.asked = kind, {}

    def suggest_categorical(self, name, choices):
        self.asked[name] = choices
        return self.kind if name == "kind" else choices[0]


def test_conditional_space_asks_only_what_a_kind_takes():
    from raytda.tasks import get_task
    from raytda.tune.searcher import config_ensemble, define_space, field_choices

    grid = default_candidates(get_task("toy-gpt"))
    choices = field_choices(grid)
    asked = {}
    for kind in ("naive", "dropout", "lora"):
        t = _Trial(kind)
        e = config_ensemble(define_space(t, choices))
        asked[kind] = set(t.asked)
        assert e.kind == kind and e in grid
    assert asked == {"naive": {"kind", "I_naive"}, "dropout": {"kind", "I_dropout", "D_dropout"},
                     "lora": {"kind", "I_lora", "L_lora"}}


def test_default_grid_has_lora_only_for_tasks_that_train_adapters():
    from raytda.tasks import get_task

    mlp = default_candidates(get_task("toy-mlp"))
    gpt = default_candidates(get_task("toy-gpt"))
    assert {e.kind for e in mlp} == {"naive", "dropout"} and len(mlp) == len(set(mlp))
    assert {e.kind for e in gpt} == {"naive", "dropout", "lora"}


def test_tune_takes_every_sweep_flag():
    """The flags are declared once: `tune` cannot drift from `sweep`, and the same flags
    name the same store and the same configurations."""
    from raytda.cli import build_sweep, parser

    sub = parser()._subparsers._group_actions[0].choices
    flags = {s: {o for a in sub[s]._actions for o in a.option_strings} for s in ("sweep", "tune")}
    assert flags["sweep"] <= flags["tune"]
    args = ["--setting", "toy-mlp", "--ensemble", "naive:I=2", "--lds-m", "5", "--out", "o"]
    sweep, tune = (build_sweep(parser().parse_args([c, *args])) for c in ("sweep", "tune"))
    assert sweep.store.uri == tune.store.uri
    assert [e.key for e in sweep.spec.evaluations()] == [e.key for e in tune.spec.evaluations()]


# --------------------------------------------------------------------------- trials


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_trials_share_cached_jobs(ray_session, tmp_path, reference, executor):
    store = tmp_path / "store"
    # The reference sweep's task, method and LDS, so results can be compared label by label.
    spec = make_sweep(tmp_path / "unused").spec
    grid = ([Ensemble("naive", 2), Ensemble("naive", 1)] if executor == "local" else
            [Ensemble("dropout", 1, 3), Ensemble("dropout", 2, 3)])
    df = tune_ensembles(spec.tasks[0], str(store), method=spec.methods[0], lds=spec.lds,
                        ensembles=grid, num_samples=2, executor=executor, progress=False,
                        storage_path=str(tmp_path / "tune"))
    assert len(df) == 2 and set(df["source"]) == {"trial"} and df["pareto"].any()
    for label, lds in zip(df["label"], df["lds"], strict=True):
        assert lds == reference[0][label]
    n = counts(__import__("raytda").ArtifactStore(str(store)))
    # Two trials, yet each model and LDS model was trained once: I_max models, m LDS ones.
    assert n["model"] == 2 and n["ldsmodel"] == spec.lds.m and n["result"] == 2
    assert df["jobs_run"].sum() == sum(v for k, v in n.items() if k != "scores")


def test_default_space_runs_adaptive_search(ray_session, tmp_path):
    pytest.importorskip("optuna")
    df = tune_ensembles("toy-mlp", str(tmp_path / "store"),
                        method=Method("trak", proj_dim=16), lds=LDSSpec(m=5), num_samples=3,
                        storage_path=str(tmp_path / "tune"), progress=False)
    assert len(df) == 3 == df["label"].nunique() and df["pareto"].any()
    n = counts(__import__("raytda").ArtifactStore(str(tmp_path / "store")))
    assert n["ldsmodel"] == 5 and n["model"] <= 5  # shared, whatever configs were sampled


def test_tune_after_sweep_reuses_the_store(gcs_address, tmp_path, monkeypatch):
    """`raytda sweep`, then `raytda tune` with the same flags and the README's default OUT
    (the relative raytda-out), started in a directory other than the Ray runtime's while
    Tune runs each trial in a directory of its own: the search reports the sweep's
    configurations without running them, runs N others on the sweep's store, trains no LDS
    model again, lists its trials, and prints a line per trial start and result through
    its stdout pipe."""
    import pandas as pd

    from raytda.cli import main
    from raytda.store import ArtifactStore

    out = tmp_path / "raytda-out"  # the default --out, relative to where both run
    small = ["--setting", "digits-mlp", "--n-train", "80", "--n-test", "20", "--epochs", "1",
             "--lds-m", "4", "--proj-dim", "32"]
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", *small, "--quiet", "--ensemble", "naive:I=1|2", "--ensemble",
                 "dropout:I=1,D=3"]) == 0
    store = ArtifactStore(str(out / "store"))  # the default store of both commands
    before = counts(store)
    lds_before = {p: t for p, t in mtimes(out / "store").items() if "/ldsmodel/" in p}
    proc = cli("tune", *small, "--num-samples", "3", "--address", gcs_address,
               "--executor", "local", cwd=tmp_path)
    lines, live = [], False
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        live = live or (line.startswith("[tune 1/3]") and proc.poll() is None)
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0, err[-3000:]
    text = "\n".join(lines)
    assert live, f"no trial line arrived while the search ran:\n{text}"
    for k in (1, 2, 3):
        started = [x for x in lines if x.startswith(f"[tune {k}/3]") and x.endswith("started")]
        reported = [x for x in lines if x.startswith(f"[tune {k}/3]") and " LDS " in x]
        assert len(started) == len(reported) == 1, text
        assert lines.index(started[0]) < lines.index(reported[0])
    assert lines[-1].startswith("3 trial(s) and 3 stored configuration(s) in "), text
    df = pd.read_parquet(out / "tune.parquet")
    stored = df[df["source"] == "store"]
    trials = df[df["source"] == "trial"]
    assert set(stored["label"]) == {"naive I=1", "naive I=2", "dropout I=1 D=3"}
    assert stored["jobs_run"].eq(0).all()
    assert len(trials) == 3 == trials["label"].nunique()
    assert set(trials["label"]).isdisjoint(stored["label"])
    for col in ("train_time_s", "serve_time_s", "params", "peak_mem_bytes",
                "analytic_train_time_s", "lds", "lds_se", "kind", "I", "D", "L", "C",
                "mask_mode", "label", "pareto"):
        assert df[col].notna().all(), col
    assert df["pareto"].any()
    assert list(out.glob("tune_lds_vs_cost_*.png"))
    after = counts(store)
    assert after["ldsmodel"] == before["ldsmodel"] and after["result"] == before["result"] + 3
    for path, stamp in lds_before.items():
        assert mtimes(out / "store")[path] == stamp, f"{path} was trained again"
    # Nothing but the default OUT was written where the commands ran (no per-trial store).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raytda-out"]


def test_search_resumes_from_its_storage(ray_session, tmp_path, reference):
    """A search found at storage_path resumes: its finished trials are kept, not rerun."""
    spec = make_sweep(tmp_path / "unused").spec
    kw = dict(method=spec.methods[0], lds=spec.lds, num_samples=2, progress=False,
              ensembles=[Ensemble("naive", 1), Ensemble("naive", 2)],
              storage_path=str(tmp_path / "tune"), resume=True)
    first = tune_ensembles(spec.tasks[0], str(tmp_path / "store"), **kw)
    again = tune_ensembles(spec.tasks[0], str(tmp_path / "store"), **kw)
    # The same trials, restored with the jobs they ran then (a rerun would run none).
    assert dict(zip(again["key"], again["jobs_run"], strict=True)) == \
        dict(zip(first["key"], first["jobs_run"], strict=True))
    assert first["jobs_run"].sum() > 0 and set(again["source"]) == {"trial"}
    for label, lds in zip(again["label"], again["lds"], strict=True):
        assert lds == reference[0][label]


def test_tune_cli_killed_then_resumed(tmp_path):
    """`raytda tune` killed after its first trial, then `--resume`d: the search ends with
    all its trials and no artifact that had been finished is written again."""
    import os
    import signal

    import pandas as pd

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
    # Three trials whether Tune had saved its state before the kill (restored) or not (a
    # new search, which reports the finished trial's configuration as stored).
    assert (df["source"] == "trial").sum() == 3 and df["label"].is_unique
    after = mtimes(out / "store")
    for path, stamp in before.items():
        assert after[path] == stamp, f"{path} was recomputed after the restart"


def test_ctrl_c_ends_the_search_with_one_line_naming_resume(gcs_address, tmp_path):
    """SIGINT to `raytda tune`'s process group (what Ctrl-C in a terminal sends) while a
    trial runs: exit 130 with one line naming `raytda tune --resume`, no traceback and
    none of Tune's own restore hints."""
    import os
    import signal

    proc = cli("tune", "--setting", "toy-mlp", "--num-samples", "3", "--lds-m", "5",
               "--proj-dim", "16", "--random", "--out", "out", "--address", gcs_address,
               "--executor", "local", cwd=tmp_path)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("[tune 1/3]") and line.rstrip().endswith("started"):
            break
    assert proc.poll() is None, f"the search ended before Ctrl-C: {proc.communicate()}"
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    both = "".join(lines) + out + err
    assert proc.returncode == 130, both[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("raytda: interrupted") and "raytda tune --resume" in last, err
    assert "Traceback" not in both and "Tuner.restore" not in both, both[-3000:]


def test_tune_runs_a_task_from_a_file_given_by_a_relative_path(gcs_address, tmp_path):
    """`raytda tune --task tasks/my_toy.py:MyToy` from a directory the trials' workers do
    not run in: the trial receives the Task class itself (its module is not importable
    there) and the search ends with its trial."""
    import pandas as pd

    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "my_toy.py").write_text(
        "from raytda.tasks.mlp import ToyMLPTask\n\n\n"
        "class MyToy(ToyMLPTask):\n    name = 'my-toy'\n")
    proc = cli("tune", "--task", "tasks/my_toy.py:MyToy", "--num-samples", "1", "--lds-m",
               "3", "--proj-dim", "8", "--random", "--ensemble", "naive:I=1|2", "--quiet",
               "--address", gcs_address, "--executor", "local", cwd=tmp_path)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, (out + err)[-3000:]
    assert out.strip().splitlines()[-1].startswith("1 trial(s) and 0 stored configuration(s)")
    df = pd.read_parquet(tmp_path / "raytda-out" / "tune.parquet")
    assert list(df["source"]) == ["trial"] and list(df["setting"]) == ["my-toy"]
