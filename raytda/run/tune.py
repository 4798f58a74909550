"""Ray Tune on top of the artifact store: adaptive multi-objective search over ensembles.

Tune does not share work between trials; the store does. Each trial turns its sampled
configuration into a one-configuration :class:`~raytda.plan.planner.SweepSpec` and runs
the same content-addressed jobs as ``raytda sweep``, so a trial asking for ``naive I=3``
after one that trained ``I=5`` trains nothing, and every LDS model is trained once for the
whole search. Objectives: maximize LDS, minimize a cost column (training time by
default). With ``optuna`` installed the default searcher is Optuna's multi-objective
sampler; otherwise Tune's random/grid generator; any Tune searcher can be passed in.

The default search space is conditional: the kind first, then only the fields that kind
takes (no D for naive, no L for Dropout; LoRA, with its L, only when the task can train
adapters). The search state lives under ``storage_path/name``: a run that was interrupted
(killed driver, lost head) resumes from it with ``resume=True`` (``raytda tune --resume``),
keeping finished trials and the searcher's history.

Example::

    from raytda.run.tune import tune_ensembles
    df = tune_ensembles("digits-mlp", store="runs/store", num_samples=12)
    df[df.pareto]          # the non-dominated configurations found
"""

from __future__ import annotations

import functools
import itertools
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from raytda.core.args import ComputeArgs
from raytda.ensembles import Ensemble, ensemble_kind
from raytda.methods import Method
from raytda.specs import LDSSpec
from raytda.task import Task

OBJECTIVE = "lds"
NAME = "raytda-tune"
# Choices of the default space: I in [1, I_MAX], D and L from these lists.
I_MAX = 5
D_CHOICES = (1, 3, 10)
L_CHOICES = (1, 3, 5)


def search_kinds(task: Task | None = None) -> list[str]:
    """Kinds the default space searches: naive and Dropout, and LoRA when ``task`` can
    train adapters (a recipe, ``Task.lora`` targets, no imported checkpoints)."""
    kinds = ["naive", "dropout"]
    if task is not None and task.lora is not None and task.recipe is not None \
            and task.checkpoints() is None:
        kinds.append("lora")
    return kinds


def _field_choices(name: str) -> tuple[int, ...]:
    return {"D": D_CHOICES, "L": L_CHOICES}[name]


def define_space(trial: Any, kinds: list[str]) -> None:
    """Optuna define-by-run space: the kind, then I and only the fields it takes."""
    kind = trial.suggest_categorical("kind", kinds)
    trial.suggest_int("I", 1, I_MAX)
    for f in ("D", "L"):
        if f in ensemble_kind(kind).takes:
            trial.suggest_categorical(f"{f}_{kind}", list(_field_choices(f)))


def space_configs(task: Task | None = None) -> list[dict[str, Any]]:
    """Every configuration of the conditional space, each with only the fields its kind
    takes (naive: I; Dropout: I, D; LoRA: I, L)."""
    out: list[dict[str, Any]] = []
    for kind in search_kinds(task):
        takes = ensemble_kind(kind).takes
        grids = [[{}]] + [[{f: v} for v in _field_choices(f)] for f in ("D", "L") if f in takes]
        for i in range(1, I_MAX + 1):
            for combo in itertools.product(*grids):
                out.append({"kind": kind, "I": i, **{k: v for c in combo for k, v in c.items()}})
    return out


def default_space(task: Task | None = None) -> dict[str, Any]:
    """Tune param space for random search: one choice among :func:`space_configs`, so a
    sampled configuration never carries a field its kind does not take."""
    from ray import tune

    return {"ensemble": tune.choice(space_configs(task))}


def config_to_ensemble(config: dict[str, Any]) -> Ensemble:
    """A sampled config as an Ensemble, with fields the kind does not take normalized away
    (so 'naive D=3' and 'naive D=10' are one cached configuration, not two)."""
    if isinstance(config.get("ensemble"), dict):  # a choice of :func:`space_configs`
        config = {**config, **config["ensemble"]}
    kind = str(config.get("kind", "naive"))
    takes = ensemble_kind(kind).takes
    defaults = {"D": 1, "C": 1, "L": 0, "mask_mode": "fixed"}
    # Optuna's define-by-run space names a conditional field per kind ("D_dropout").
    config = {**config, **{f: config[f"{f}_{kind}"] for f in defaults if f"{f}_{kind}" in config}}
    kw = {f: (config.get(f) if f in takes and config.get(f) is not None else d)
          for f, d in defaults.items()}
    return Ensemble(kind, int(config.get("I", 1)), int(kw["D"]), int(kw["C"]),
                    str(kw["mask_mode"]), int(kw["L"]))


def run_trial(config: dict[str, Any], task: Task, method: Method, lds: LDSSpec,
              store: str, cost: str, base_seed: int, compute: ComputeArgs,
              executor: str) -> dict[str, Any]:
    """Evaluate one configuration through the store; returns the metrics row."""
    from raytda.plan.planner import SweepSpec, clear_stale, make_plan
    from raytda.run.executors import make_executor
    from raytda.store import ArtifactStore

    spec = SweepSpec(tasks=(task,), methods=(method,),
                     ensembles=(config_to_ensemble(config),), lds=lds, base_seed=base_seed)
    st = ArtifactStore(store)
    plan = make_plan(spec, st)
    jobs_run = len(plan.todo)
    ex = make_executor(executor, compute, None, False)
    if executor == "ray":
        ex.shutdown = False  # the trial runs inside the Tune session's Ray
    clear_stale(plan, st)
    ex.execute(plan, st)
    row = st.meta(plan.evaluations[0].key)
    return {OBJECTIVE: float(row["lds"]), cost: float(row[cost]), "label": row["label"],
            "lds_se": float(row["lds_se"]), "jobs_run": jobs_run, "result_key": row["key"]}


def _trainable(config: dict[str, Any], **kw: Any) -> None:
    from ray import tune

    tune.report(run_trial(config, **kw))


def default_searcher(cost: str, task: Task | None = None) -> Any | None:
    """Optuna's multi-objective sampler over the conditional space (define-by-run) when
    optuna is installed, else None (random search over :func:`default_space`)."""
    try:
        import optuna  # noqa: F401
        from ray.tune.search.optuna import OptunaSearch
    except ImportError:
        return None
    # A partial of a module function, so Tune can pickle the searcher with its state.
    space = functools.partial(define_space, kinds=search_kinds(task))
    return OptunaSearch(space=space,
                        metric=[OBJECTIVE, cost], mode=["max", "min"])


def tune_ensembles(task: str | Task, store: str, *, method: str | Method = "trak",
                   lds: LDSSpec | None = None, space: dict[str, Any] | None = None,
                   cost: str = "train_time_s", num_samples: int = 8,
                   search_alg: Any | None = "auto", max_concurrent_trials: int = 1,
                   executor: str = "local", compute: ComputeArgs | None = None,
                   base_seed: int = 0, address: str | None = None,
                   storage_path: str | None = None, data_dir: str | None = None,
                   resume: bool = False, name: str = NAME,
                   **setting_overrides: Any) -> pd.DataFrame:
    """Search ensemble configurations with Ray Tune; one row per trial, with Pareto flags.

    Args:
        task: a built-in setting's name or a Task.
        store: artifact store shared by all trials (and by ``raytda sweep``).
        space: Tune search space over Ensemble fields (kind, I, D, C, L, mask_mode);
            default: the conditional space (:func:`define_space` with Optuna,
            :func:`default_space` without).
        cost: cost column to minimize next to maximizing LDS.
        search_alg: a Tune searcher; 'auto' picks :func:`default_searcher`; None means
            Tune's random/grid variant generator.
        max_concurrent_trials: trials at once. Concurrent trials that need the same
            missing artifact both build it (atomic writes keep it correct), so keep
            this low when trials overlap much.
        executor: how a trial runs its jobs: 'local' (inside the trial's worker, which
            reserves one CPU) or 'ray' (as Ray tasks spread over the cluster; the trial
            itself then reserves 0.01 CPU).
        storage_path, name: where Tune keeps the search state (``storage_path/name``);
            default a fresh temporary directory.
        resume: continue the search found at ``storage_path/name`` (finished trials are
            kept, unfinished and errored ones run again, the searcher's history is
            restored); start a new one when there is none.
    """
    import ray
    from ray import tune

    from raytda.methods import as_method
    from raytda.results import pareto_mask
    from raytda.run.ray_executor import RayExecutor

    if not ray.is_initialized():
        RayExecutor(address=address, shutdown=False).connect()
    from raytda.tasks import as_task

    task = as_task(task, data_dir, setting_overrides)
    method = as_method(method, None)
    lds = lds or LDSSpec()
    compute = compute or ComputeArgs()
    trainable = tune.with_parameters(
        _trainable, task=task, method=method, lds=lds, store=store, cost=cost,
        base_seed=base_seed, compute=compute, executor=executor)
    # A trial that farms its jobs out only coordinates: a sliver of a CPU (Tune refuses 0).
    trainable = tune.with_resources(trainable, {"cpu": 0.01 if executor == "ray" else 1})
    storage = str(Path(storage_path or tempfile.mkdtemp(prefix="raytda-tune-")).resolve())
    where = str(Path(storage) / name)
    if resume and tune.Tuner.can_restore(where):
        tuner = tune.Tuner.restore(where, trainable=trainable, resume_errored=True,
                                   resume_unfinished=True)
    else:
        searcher = default_searcher(cost, task) if search_alg == "auto" else search_alg
        if space is None and searcher is not None and search_alg == "auto":
            param_space: dict[str, Any] = {}  # the searcher defines the space
        else:
            param_space = space or default_space(task)
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(num_samples=num_samples, search_alg=searcher,
                                        max_concurrent_trials=max_concurrent_trials),
            run_config=tune.RunConfig(name=name, verbose=0, storage_path=storage),
        )
    grid = tuner.fit()
    rows = []
    for res in grid:
        if res.error is not None:
            raise RuntimeError(f"a Tune trial failed: {res.error}")
        rows.append({**{k: res.metrics[k] for k in (OBJECTIVE, cost, "label", "lds_se",
                                                     "jobs_run", "result_key")},
                     "config": {k: v for k, v in dict(res.config).items() if v is not None}})
    df = pd.DataFrame(rows)
    if len(df):
        df["pareto"] = pareto_mask(df[cost].to_numpy(float), df[OBJECTIVE].to_numpy(float))
    return df
