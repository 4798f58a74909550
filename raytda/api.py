"""The Python front door: ``Sweep(...).plan() / .run() / .plot() / .scores()``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from raytda.core.args import ComputeArgs
from raytda.defaults import DEFAULT_ENSEMBLE_GRIDS
from raytda.ensembles import Ensemble, as_ensemble
from raytda.ensembles.spec import expand_grid
from raytda.methods import Method, as_method
from raytda.plan.evaluate import Evaluate, Truth
from raytda.plan.planner import Plan, SweepSpec, clear_stale, make_plan
from raytda.results import stored_scores
from raytda.run.executors import DEFAULT_EXECUTOR, make_executor
from raytda.specs import LDSSpec, SpecError
from raytda.store import ArtifactStore
from raytda.task import Task
from raytda.tasks import as_task

#: The ensembles of :data:`raytda.defaults.DEFAULT_ENSEMBLE_GRIDS` (the CLI's default too).
DEFAULT_ENSEMBLES: tuple[Ensemble, ...] = tuple(
    e for grid in DEFAULT_ENSEMBLE_GRIDS for e in expand_grid(grid))
_DEFAULT_LDS = object()


def _listify(x: Any, single: tuple[type, ...]) -> list:
    return [x] if isinstance(x, single) else list(x)


class Sweep:
    """A sweep of ensemble configurations over one or more Tasks, run once per artifact.

    ``tasks`` are built-in names (``"digits-mlp"``) or your own
    :class:`~raytda.task.Task` objects. Configurations are the grid ``methods`` x
    ``ensembles`` (pairs that cannot run together, e.g. Grad-Dot with a forward-only
    Dropout Ensemble, are skipped with one logged line each), or exactly the
    ``configurations`` given as (method, ensemble) pairs. ``lds`` is an LDSSpec (retrain on random subsets;
    the default), a :class:`~raytda.ground_truth.GroundTruth` you have, or None
    (attribution only: scores and costs). ``proj_dim`` sets every method's k; a method
    that gives no k or features gets them per Task (``Method.resolved``: what the Task
    declares, else a rule from its train size and model size), stated in the results'
    ``proj_dim``, ``features`` and ``chosen`` columns.

    Example::

        sweep = Sweep("digits-mlp", ensembles=["naive:I=1", "dropout:I=1,D=10"], store="runs/s")
        table = sweep.run()            # LDS, costs, Pareto flags per configuration
        sweep.plot("runs/s")
        s = sweep.scores("dropout:I=1,D=10")   # (n_test, n_train) ensemble scores
    """

    def __init__(
        self,
        tasks: str | Task | Sequence[str | Task] = "digits-mlp",
        methods: str | Method | Sequence[str | Method] | None = None,
        ensembles: Iterable[str | Ensemble] | None = None,
        lds: Truth | object = _DEFAULT_LDS,
        store: str = "raytda-store",
        data_dir: str | None = None,
        base_seed: int = 0,
        proj_dim: int | None = None,
        executor: Any = DEFAULT_EXECUTOR,
        address: str | None = None,
        compute: ComputeArgs | None = None,
        progress: bool = True,
        configurations: Iterable[tuple[str | Method, str | Ensemble]] | None = None,
        **setting_overrides: Any,
    ) -> None:
        tasks = _listify(tasks, (str, Task))
        if configurations is not None and (methods is not None or ensembles is not None):
            raise SpecError("give either configurations (method, ensemble pairs) or the "
                            "methods x ensembles grid, not both")
        methods = _listify("trak" if methods is None else methods, (str, Method))
        ensembles = DEFAULT_ENSEMBLES if ensembles is None else ensembles
        pairs = tuple((as_method(m, proj_dim), as_ensemble(e))
                      for m, e in (configurations or ()))
        self.spec = SweepSpec(
            tasks=tuple(as_task(t, data_dir, setting_overrides) for t in tasks),
            methods=tuple(as_method(m, proj_dim) for m in methods),
            ensembles=tuple(as_ensemble(e) for e in ensembles),
            lds=LDSSpec() if lds is _DEFAULT_LDS else lds,
            base_seed=base_seed,
            configurations=pairs,
        )
        self.store = ArtifactStore(store)
        self.compute = compute or ComputeArgs()
        self._executor, self._address, self._progress = executor, address, progress
        self.results: pd.DataFrame | None = None

    @classmethod
    def from_spec(cls, spec: SweepSpec, store: str, compute: ComputeArgs | None = None,
                  executor: Any = DEFAULT_EXECUTOR, address: str | None = None,
                  progress: bool = True) -> Sweep:
        """A Sweep of an existing spec (e.g. one configuration of a search, which Tune's
        trials run this way), with where and how to run it."""
        sweep = cls.__new__(cls)
        sweep.spec = spec
        sweep.store = ArtifactStore(store)
        sweep.compute = compute or ComputeArgs()
        sweep._executor, sweep._address, sweep._progress = executor, address, progress
        sweep.results = None
        return sweep

    def check(self) -> None:
        """Fail before any work, with one clear error, if a Task's data, model, output,
        dropout sites, checkpoints or ground truth do not fit; then check the store."""
        self._check_tasks()
        self.store.check_writable()

    def _check_tasks(self) -> None:
        from raytda.validate import check_task

        for task in self.spec.tasks:
            check_task(task, self.spec.ensembles, self.spec.methods, self.spec.lds)

    def plan(self) -> Plan:
        """What would run and what the store already has."""
        return make_plan(self.spec, self.store, self.compute)

    def run(self, cost: str = "train_time_s") -> pd.DataFrame:
        """Run every missing job, then return one row per configuration."""
        from raytda.results import collect_results

        # The executor first: a Ray executor probes its cluster address on construction,
        # so a wrong --address fails before check() creates the store directory.
        executor = make_executor(self._executor, self.compute, self._address, self._progress)
        # Planned before the store is checked (which creates its directory): a plan the
        # memory budget cannot hold is refused with nothing written.
        self._check_tasks()
        plan = self.plan()
        self.store.check_writable()
        if self._progress:  # what it will cost, before it starts
            from raytda.run.progress import announce

            announce(self.estimate(plan).line())
        clear_stale(plan, self.store)
        executor.execute(plan, self.store)
        self.results = collect_results(plan, self.store, cost)
        return self.results

    def estimate(self, plan: Plan | None = None):
        """What running the plan will cost: jobs by kind, bytes stored, seconds (from
        what this store has measured; None when nothing comparable was), as a
        :class:`raytda.plan.estimate.Estimate` whose ``line()`` says it in one line."""
        from raytda.plan.estimate import estimate

        return estimate(plan or self.plan(), self.store)

    def cached(self, cost: str = "train_time_s", plan: Plan | None = None) -> pd.DataFrame | None:
        """The configurations the store already has, computing nothing (None if none)."""
        from raytda.results import cached_results

        df = cached_results(plan or self.plan(), self.store, cost)
        if df is not None:
            self.results = df
        return df

    def plot(self, out_dir: str | Path = ".", fmt: str = "png") -> list[Path]:
        """LDS against training time, serving time and stored parameters: the paths of
        the figures written, none for a sweep without LDS (``lds=None``)."""
        from raytda.plot import plot_results

        if self.results is None:
            raise SpecError("run() the sweep before plotting it")
        return plot_results(self.results, out_dir, fmt)

    # ------------------------------------------------------------------ scores

    def evaluation(self, ensemble: str | Ensemble, method: str | Method | None = None,
                   task: str | Task | None = None) -> Evaluate:
        """The configuration of this sweep that ``ensemble`` (and method, task) names.

        ``ensemble`` is a spec (``"lora:I=1,L=2"``, an Ensemble) or the label the results
        table shows (``"lora I=1 L=2"``); ``method`` a Method, a method's name, or, where a
        sweep ran variants of one method, the label the table shows
        (``"trak proj_dim=8192"``)."""
        evals = self.spec.evaluations(self.compute)
        if isinstance(ensemble, str) and any(e.ensemble.label == ensemble for e in evals):
            def same(e: Evaluate) -> bool:
                return e.ensemble.label == ensemble
            shown = ensemble
        else:
            ens = as_ensemble(ensemble)

            def same(e: Evaluate) -> bool:
                return e.ensemble == ens
            shown = ens.label
        def matches(e: Evaluate, exact: bool) -> bool:
            m = e.method
            if method is None:
                return True
            if isinstance(method, Method):  # that Method (resolved as the sweep did); else its name
                return m == method.resolved(e.task) if exact else m.name == method.name
            return method in (m.name, m.label)

        candidates = [e for e in evals if same(e)
                      and (task is None or e.task.name == getattr(task, "name", task))]
        found = [e for e in candidates if matches(e, exact=True)] \
            or [e for e in candidates if matches(e, exact=False)]
        if len(found) != 1:
            labels = sorted({f"{e.method.label!r} {e.ensemble.label} on {e.task.name}"
                             for e in evals})
            what = "no" if not found else "more than one"
            raise SpecError(f"{what} configuration of this sweep matches {shown!r}"
                            f"{'' if method is None else f' with {method}'}; it has {labels}")
        return found[0]

    def iter_scores(self, ensemble: str | Ensemble, method: str | Method | None = None,
                    task: str | Task | None = None) -> Iterator[tuple[slice, Any]]:
        """(test rows, scores of those rows x n_train) chunk by chunk, from the store."""
        ev = self.evaluation(ensemble, method, task)
        if not self.store.has(ev.key):
            raise SpecError(f"{ev.describe()} has not run yet; call run() first")
        yield from stored_scores(self.store, ev.key)

    def scores(self, ensemble: str | Ensemble, method: str | Method | None = None,
               task: str | Task | None = None):
        """The configuration's attribution scores as one tensor, n_test x n_train: row i
        holds test sample i's score for every training sample (dattri and TRAK lay them
        out n_train x n_test: transpose). For test sets too large for that, use
        :meth:`iter_scores`; ``raytda scores --dense`` writes either layout to a file."""
        import torch

        return torch.cat([s for _, s in self.iter_scores(ensemble, method, task)])
