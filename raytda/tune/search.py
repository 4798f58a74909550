"""Ray Tune on top of the artifact store: adaptive multi-objective search over ensembles.

Tune does not share work between trials; the store does. A search is a :class:`Sweep`
whose ensemble grid is searched instead of run whole: each trial is that sweep narrowed to
one configuration and run through :meth:`Sweep.run` (its checks, its plan, its executor)
on the sweep's store, so a trial asking for ``naive I=3`` after one that trained ``I=5``
trains nothing, and every LDS model is trained once for the whole search and for every
``raytda sweep`` on the same store. Objectives: maximize LDS, minimize a cost column
(training time by default).

Configurations never repeat: :class:`~raytda.tune.searcher.DistinctSearcher` proposes
each configuration of the grid at most once, and those the store already holds are not
proposed at all: they are reported next to the trials (and, with Optuna, seed its
sampler). The default grid is conditional: the kind first, then only the fields that kind
takes (no D for naive, no L for Dropout; LoRA, with its L, only when the task can train
adapters). The search state lives under ``storage_path/name``: a search that was
interrupted (killed driver, lost head) resumes from it with ``resume=True``
(``raytda tune --resume``), keeping finished trials and the searcher's history.

Example::

    from raytda.tune.search import tune_ensembles
    df = tune_ensembles("digits-mlp", store="raytda-out/store", num_samples=6)
    df[df.pareto]          # the non-dominated configurations, trials and stored ones
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd

from raytda.api import Sweep
from raytda.core.args import ComputeArgs
from raytda.ensembles import Ensemble
from raytda.errors import RaytdaError
from raytda.plan.planner import SweepSpec
from raytda.results import COST_AXES
from raytda.run.executors import DEFAULT_EXECUTOR, executor_kind
from raytda.specs import LDSSpec, SpecError
from raytda.task import Task
from raytda.tune.searcher import OBJECTIVE, config_ensemble

NAME = "raytda-tune"
# The default grid: I in 1..5, Dropout's D and LoRA's L from a short list each.
DEFAULT_GRIDS = ("naive:I=1|2|3|4|5", "dropout:I=1|2|3|4|5,D=1|3|10")
LORA_GRID = "lora:I=1|2|3|4|5,L=1|3|5"
# What a trial reports to Tune: enough for the searcher and the progress lines; the table
# is read from the store at the end.
TRIAL_METRICS = (OBJECTIVE, "lds_se", *COST_AXES)
# Columns of the table first, in this order; every other result field follows.
TABLE_COLUMNS = ("setting", "method", "label", "kind", "I", "D", "L", "C", "mask_mode",
                 OBJECTIVE, "lds_se", *COST_AXES, "analytic_train_time_s",
                 "analytic_serve_time_s", "source", "trial", "jobs_run", "pareto")


def can_train_adapters(task: Task) -> bool:
    """Whether ``task`` can train LoRA adapters (the LoRA kind's own check says so)."""
    lora = Ensemble("lora", 1, L=1)
    try:
        lora.kind_class.check_task(lora, task)
    except SpecError:
        return False
    return True


def default_candidates(task: Task | None = None) -> list[Ensemble]:
    """The default grid: naive and Dropout, and LoRA when ``task`` can train adapters."""
    from raytda.ensembles.spec import expand_grid

    grids = [*DEFAULT_GRIDS, *([LORA_GRID] if task is not None and can_train_adapters(task)
                               else [])]
    return [e for g in grids for e in expand_grid(g)]


# --------------------------------------------------------------------------- one trial


def run_trial(config: dict[str, Any], spec: SweepSpec, store: str, cost: str,
              compute: ComputeArgs, executor: str) -> dict[str, Any]:
    """Run the sweep narrowed to the trial's configuration, exactly as ``Sweep.run`` runs
    any sweep; returns what the trial reports to Tune."""
    sweep = Sweep.from_spec(spec.replace(ensembles=(config_ensemble(config),)), store,
                            compute=compute, executor=executor, progress=False)
    # Missing when the trial starts; a concurrent trial may build some of them meanwhile.
    jobs_run = len(sweep.plan().todo)
    row = sweep.run(cost).iloc[0]
    return {**{k: float(row[k]) for k in TRIAL_METRICS}, "label": str(row["label"]),
            "result_key": str(row["key"]), "jobs_run": jobs_run}


def _trainable(config: dict[str, Any], **kw: Any) -> None:
    from ray import tune

    tune.report(run_trial(config, **kw))


# --------------------------------------------------------------------------- progress


def _fmt(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1e4 else f"{x:,.0f}"


def trial_line(result: dict[str, Any], cost: str) -> str:
    """A trial's result in one line: LDS with its standard error, the costs, the jobs run."""
    costs = ", ".join(f"{k} {_fmt(float(result[k]))}" for k in COST_AXES if k in result)
    return (f"LDS {result[OBJECTIVE]:.4f} ± {result['lds_se']:.4f}; {costs}; "
            f"{result.get('jobs_run', 0)} jobs run")


def make_progress(total: int, cost: str, write: Callable[[str], None]) -> Any:
    """A Tune callback writing one line when a trial starts and one when it reports."""
    from ray.tune import Callback

    class TrialProgress(Callback):
        """Per-trial lines in the driver (Tune's own table is off: verbose=0)."""

        def __init__(self) -> None:
            self.number: dict[str, int] = {}

        def _head(self, trial: Any) -> str:
            n = self.number.setdefault(trial.trial_id, len(self.number) + 1)
            return f"[tune {n}/{total}] {config_ensemble(trial.config).label}"

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            write(f"{self._head(trial)}: started")

        def on_trial_result(self, iteration: int, trials: list, trial: Any,
                            result: dict[str, Any], **info: Any) -> None:
            done = len({t.trial_id for t in trials if t.status == "TERMINATED"}
                       | {trial.trial_id})
            write(f"{self._head(trial)}: {trial_line(result, cost)} "
                  f"({min(done, total)}/{total} done)")

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            write(f"{self._head(trial)}: failed ({trial.error_file or 'see the Tune logs'})")

    return TrialProgress()


def _print(line: str) -> None:
    print(line, flush=True)  # flushed: readable line by line through a pipe


# --------------------------------------------------------------------------- the search


def tune_sweep(sweep: Sweep, *, cost: str = "train_time_s", num_samples: int = 8,
               sampler: str = "auto", max_concurrent_trials: int = 1,
               storage_path: str | None = None, resume: bool = False, name: str = NAME,
               progress: bool = True, seed: int | None = None) -> pd.DataFrame:
    """Search ``sweep``'s ensemble grid with Ray Tune instead of running all of it.

    Runs up to ``num_samples`` trials, each a configuration of the grid that neither the
    store nor an earlier trial has (fewer when the grid runs out), and returns one row per
    distinct configuration evaluated: the trials and the grid's configurations the store
    held before, with the result fields of ``Sweep.run`` and ``pareto`` (and
    ``pareto_<axis>``) computed over all of them.

    Args:
        sweep: one task, one method, an LDS ground truth; its store, executor and compute
            arguments are the trials'. Executor 'local' runs a trial's jobs inside the
            trial's worker (one CPU); 'ray' farms them out as Ray actors (the trial then
            reserves 0.01 CPU).
        cost: cost column minimized next to maximizing LDS.
        sampler: 'optuna' (multi-objective TPE), 'random' (uniform, without replacement)
            or 'auto' (Optuna when installed).
        max_concurrent_trials: trials at once. Concurrent trials that need the same
            missing artifact both build it (atomic writes keep it correct).
        storage_path, name: where Tune keeps the search state (``storage_path/name``);
            default a fresh temporary directory.
        resume: continue the search found at ``storage_path/name`` (finished trials are
            kept, unfinished and errored ones run again, the searcher's history is
            restored); start a new one when there is none.
        progress: one line per trial start and result on stdout.
        seed: the sampler's seed (default the sweep's base seed).
    """
    import ray

    from raytda.results import check_cost
    from raytda.run.ray_executor import RayExecutor

    check_cost(cost)
    spec = sweep.spec
    if len(spec.tasks) != 1 or len(spec.methods) != 1:
        raise SpecError(f"a search covers one task and one method; this sweep has "
                        f"{len(spec.tasks)} task(s) and {len(spec.methods)} method(s)")
    if spec.lds is None:
        raise SpecError("a search maximizes LDS and needs a ground truth; drop --no-lds "
                        "(lds=None)")
    if num_samples < 1:
        raise SpecError(f"num_samples must be >= 1 (trials to run), got {num_samples}")
    write = _print if progress else (lambda line: None)
    sampler = _pick_sampler(sampler)
    candidates = list(dict.fromkeys(spec.ensembles))
    # The whole grid checked and planned before Ray starts: a configuration that cannot
    # run fails here, and the grid's stored results are known before the first trial.
    sweep.check()
    plan = sweep.plan()
    known_rows = sweep.cached(cost, plan)
    rows = {} if known_rows is None else {r["key"]: r for _, r in known_rows.iterrows()}
    known = {ev.ensemble: (float(rows[ev.key][OBJECTIVE]), float(rows[ev.key][cost]))
             for ev in plan.evaluations if ev.key in rows}
    n_trials = min(num_samples, len(candidates) - len(known))
    task, method = spec.tasks[0], spec.methods[0]
    where = Path(storage_path or tempfile.mkdtemp(prefix="raytda-tune-")).resolve() / name
    restore = resume and _can_restore(where)
    if restore:
        write(f"tune: resuming the search in {where}")
    else:
        write(f"tune: {method.name} on {task.name}, {len(candidates)} configurations in the "
              f"grid, {len(known)} in the store {sweep.store.uri} already; "
              f"{n_trials} trial(s), {sampler} sampler, maximizing LDS, minimizing {cost}")
        for e, values in known.items():
            write(f"[store] {e.label}: LDS {values[0]:.4f}, {cost} {_fmt(values[1])}")
        if n_trials < num_samples:
            write(f"tune: only {n_trials} configuration(s) of the grid are not in the store; "
                  f"running those")
    grid: Any = []
    if n_trials > 0 or restore:
        owner = None
        if not ray.is_initialized():
            owner = RayExecutor(address=sweep._address, shutdown=False)
            owner.connect()
        try:
            from raytda.run.node_paths import check_paths_on_nodes, data_paths, store_path
            from raytda.run.policy import ship_task_code

            # Trials (and, with executor 'ray', their jobs) run on any node.
            check_paths_on_nodes(store_path(sweep.store.uri) + data_paths(spec.tasks))
            # A Task class from the user's file travels with the trials' spec by value:
            # a trial's worker, in its own directory, cannot import the file's module.
            ship_task_code(SimpleNamespace(jobs=[SimpleNamespace(task=t) for t in spec.tasks]))
            tuner = _tuner(sweep, candidates, known, cost, n_trials, sampler,
                           max_concurrent_trials, where, restore, write,
                           spec.base_seed if seed is None else seed)
            with _tune_output_off(), _own_interrupt_messages():
                grid = tuner.fit()
        finally:
            if owner is not None:
                owner.close()  # shut down the Ray this search started, before exiting
    # Tune ends a search on Ctrl-C by saving its state and returning what it has: trials
    # that were running or pending come back without their result.
    if any(res.error is None and "result_key" not in (res.metrics or {}) for res in grid) \
            or any(_interrupted(res.error) for res in grid if res.error is not None):
        raise SearchInterrupted(RESUME_HINT)
    trials = []
    for res in grid:
        if res.error is not None:
            # Ray's error text is the trial's traceback; its last line names the cause.
            lines = [x.strip() for x in str(res.error).splitlines() if x.strip()]
            raise TrialFailed(f"a Tune trial ({config_ensemble(res.config).label}) failed: "
                              f"{lines[-1] if lines else res.error.__class__.__name__}; "
                              f"its log is under the search's --tune-dir")
        trials.append({"result_key": res.metrics["result_key"],
                       "jobs_run": int(res.metrics["jobs_run"]),
                       "ensemble": config_ensemble(res.config)})
    return tune_table(sweep, known, trials, cost)


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped the search. Tune saved its state first, and every finished
    artifact is in the store: the search continues where it stopped with ``resume=True``
    (``raytda tune --resume``)."""


class TrialFailed(RaytdaError, RuntimeError):
    """A trial raised: its configuration and the first part of its error, on one line."""


#: What an interrupted search tells its user (the CLI prints it after "interrupted; ").
RESUME_HINT = ("finished trials and artifacts are kept; continue the search with "
               "`raytda tune --resume` and the same flags")
# Tune's log records on Ctrl-C: its progress notice and its hint to call Tuner.restore,
# which a raytda user does not call (SearchInterrupted names `raytda tune --resume`).
_TUNE_INTERRUPT_RECORDS = ("Stop signal received", "Experiment has been interrupted",
                           "Trials did not complete")


def _interrupted(error: BaseException) -> bool:
    """Whether a trial's error is Ctrl-C reaching its worker (the terminal signals the
    whole process group) rather than a failure of its own."""
    return isinstance(error, KeyboardInterrupt) or "KeyboardInterrupt" in str(error)


@contextmanager
def _own_interrupt_messages() -> Iterator[None]:
    """During one fit: drop Tune's Ctrl-C log records (the search reports the stop
    itself) and, afterwards, give SIGINT back to the handler it had before: Tune leaves
    its own installed after a search that ends normally, which would swallow a later
    Ctrl-C."""
    import logging
    import signal
    import threading

    def keep(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_TUNE_INTERRUPT_RECORDS)

    tune_log = logging.getLogger("ray.tune.tune")
    tune_log.addFilter(keep)
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    try:
        yield
    finally:
        tune_log.removeFilter(keep)
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _pick_sampler(sampler: str) -> str:
    if sampler not in ("auto", "optuna", "random"):
        raise SpecError(f"unknown sampler {sampler!r}; use 'auto', 'optuna' or 'random'")
    try:
        import optuna  # noqa: F401
    except ImportError:
        if sampler == "optuna":
            raise SpecError("the optuna sampler needs `pip install optuna`; or use "
                            "sampler='random' (--random)") from None
        return "random"
    return "optuna" if sampler == "auto" else sampler


def _can_restore(where: Path) -> bool:
    from ray import tune

    return tune.Tuner.can_restore(str(where))


@contextmanager
def _tune_output_off() -> Iterator[None]:
    """Tune's own console output off for one fit: with verbose=0 its default reporter
    still prints an experiment banner; the legacy one prints nothing. Our per-trial lines
    replace both. A RAY_AIR_NEW_OUTPUT the user set is left alone."""
    key = "RAY_AIR_NEW_OUTPUT"
    given = key in os.environ
    if not given:
        os.environ[key] = "0"
    try:
        yield
    finally:
        if not given:
            os.environ.pop(key, None)


def _tuner(sweep: Sweep, candidates: list[Ensemble], known: dict, cost: str, n_trials: int,
           sampler: str, concurrent: int, where: Path, restore: bool,
           write: Callable[[str], None], seed: int) -> Any:
    """A new Tuner over the grid, or the one found at ``where``."""
    from ray import tune

    from raytda.tune.searcher import DistinctSearcher

    executor = sweep._executor if isinstance(sweep._executor, str) else DEFAULT_EXECUTOR
    trainable = tune.with_parameters(
        _trainable, spec=sweep.spec, store=sweep.store.uri, cost=cost,
        compute=sweep.compute, executor=executor)
    # A trial that farms its jobs out only coordinates: a sliver of a CPU (Tune refuses 0).
    distributed = executor_kind(executor).distributed
    trainable = tune.with_resources(trainable, {"cpu": 0.01 if distributed else 1})
    if restore:
        return tune.Tuner.restore(str(where), trainable=trainable, resume_errored=True,
                                  resume_unfinished=True)
    searcher = DistinctSearcher(candidates, known, cost, sampler=sampler, seed=seed)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(num_samples=n_trials, search_alg=searcher,
                                    max_concurrent_trials=concurrent),
        run_config=tune.RunConfig(name=where.name, verbose=0, storage_path=str(where.parent),
                                  callbacks=[make_progress(n_trials, cost, write)]),
    )


def tune_table(sweep: Sweep, known: dict[Ensemble, tuple[float, float]],
               trials: list[dict[str, Any]], cost: str) -> pd.DataFrame:
    """One row per distinct configuration (stored before the search, or run by a trial),
    read from the store, with the Pareto flags computed over these rows."""
    order = list(dict.fromkeys([*known, *(t["ensemble"] for t in trials)]))
    if not order:
        return pd.DataFrame(columns=list(TABLE_COLUMNS))
    view = Sweep.from_spec(sweep.spec.replace(ensembles=tuple(order)), sweep.store.uri)
    df = view.cached(cost)
    by_key = {t["result_key"]: (i + 1, t["jobs_run"]) for i, t in enumerate(trials)}
    df["kind"] = df["ensemble"]
    df["source"] = ["trial" if k in by_key else "store" for k in df["key"]]
    df["trial"] = pd.array([by_key.get(k, (None, None))[0] for k in df["key"]], dtype="Int64")
    df["jobs_run"] = pd.array([by_key.get(k, (None, 0))[1] for k in df["key"]], dtype="Int64")
    first = [c for c in TABLE_COLUMNS if c in df]
    df = df[first + [c for c in df.columns if c not in first]]
    return df.sort_values(["trial", OBJECTIVE], ascending=[True, False],
                          na_position="first").reset_index(drop=True)


def write_tune(df: pd.DataFrame, out: str | Path, fmt: str = "png") -> tuple[Path, list[Path]]:
    """``OUT/tune.parquet`` and the frontier plots ``OUT/tune_lds_vs_cost_*.png`` (named
    apart from a sweep's plots, so a sweep and a search can share OUT)."""
    import shutil

    from raytda.plot import plot_results

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "tune.parquet"
    tmp = path.with_suffix(".parquet.tmp")
    df.to_parquet(tmp, index=False)
    tmp.replace(path)
    plots = []
    if len(df):
        with tempfile.TemporaryDirectory(dir=out) as d:
            for p in plot_results(df, d, fmt):
                plots.append(out / f"tune_{p.name}")
                shutil.move(str(p), plots[-1])
    return path, plots


def tune_ensembles(task: str | Task, store: str = "raytda-store", *,
                   method: Any = "trak", lds: LDSSpec | None = None,
                   ensembles: Sequence[str | Ensemble] | None = None,
                   cost: str = "train_time_s", num_samples: int = 8, sampler: str = "auto",
                   max_concurrent_trials: int = 1, executor: str = DEFAULT_EXECUTOR,
                   compute: ComputeArgs | None = None, base_seed: int = 0,
                   address: str | None = None, storage_path: str | None = None,
                   data_dir: str | None = None, resume: bool = False, name: str = NAME,
                   progress: bool = True, **setting_overrides: Any) -> pd.DataFrame:
    """Search ensemble configurations of ``task`` with Ray Tune (:func:`tune_sweep`).

    ``ensembles`` is the grid searched (default :func:`default_candidates`); the other
    arguments are :class:`~raytda.api.Sweep`'s.
    """
    from raytda.tasks import as_task

    t = as_task(task, data_dir, setting_overrides)
    grid = list(ensembles) if ensembles is not None else default_candidates(t)
    sweep = Sweep(t, methods=method, ensembles=grid, lds=lds or LDSSpec(), store=store,
                  base_seed=base_seed, executor=executor, address=address, compute=compute,
                  progress=False)
    return tune_sweep(sweep, cost=cost, num_samples=num_samples, sampler=sampler,
                      max_concurrent_trials=max_concurrent_trials,
                      storage_path=storage_path, resume=resume, name=name, progress=progress)
