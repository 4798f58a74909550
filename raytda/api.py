"""The Python front door: ``Sweep(...).plan() / .run() / .plot()``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from raytda.core.args import ComputeArgs
from raytda.plan.planner import Plan, SweepSpec, make_plan
from raytda.specs import Ensemble, LDSSpec, Method, Setting, parse_ensemble
from raytda.store import ArtifactStore

DEFAULT_ENSEMBLES = (
    *(Ensemble("naive", i) for i in (1, 2, 3, 5)),
    *(Ensemble("dropout", i, 10) for i in (1, 2, 3, 5)),
)


def as_setting(s: str | Setting, data_dir: str | None, overrides: dict[str, Any]) -> Setting:
    from raytda.settings import get_setting

    if isinstance(s, Setting):
        return s if data_dir is None else s.replace(data=s.data.replace(root=data_dir))
    return get_setting(s, data_dir=data_dir, **overrides)


def as_method(m: str | Method, proj_dim: int | None) -> Method:
    if isinstance(m, Method):
        return m
    return Method(m) if proj_dim is None else Method(m, proj_dim=proj_dim)


def as_ensemble(e: str | Ensemble) -> Ensemble:
    return e if isinstance(e, Ensemble) else parse_ensemble(e)


def make_executor(executor: Any, compute: ComputeArgs, address: str | None, progress: bool):
    """'local' (in-process), 'ray' (local or joined cluster), or an executor object."""
    if executor == "local":
        from raytda.run.local import InProcessExecutor

        return InProcessExecutor(compute, progress)
    if executor == "ray":
        from raytda.run.ray_executor import RayExecutor

        return RayExecutor(compute, address=address, progress=progress)
    if hasattr(executor, "execute"):
        return executor
    raise ValueError(f"unknown executor {executor!r}; use 'local', 'ray' or an executor object")


class Sweep:
    """A sweep of ensemble configurations, run once per unique artifact.

    Example::

        sweep = Sweep("digits-mlp", ensembles=["naive:I=1", "dropout:I=1,D=10"], store="runs/s")
        table = sweep.run()            # LDS, costs, Pareto flags per configuration
        sweep.plot("runs/s")
    """

    def __init__(
        self,
        settings: str | Setting | Sequence[str | Setting] = "digits-mlp",
        methods: str | Method | Sequence[str | Method] = "trak",
        ensembles: Iterable[str | Ensemble] = DEFAULT_ENSEMBLES,
        lds: LDSSpec | None = None,
        store: str = "raytda-store",
        data_dir: str | None = None,
        base_seed: int = 0,
        proj_dim: int | None = None,
        executor: Any = "local",
        address: str | None = None,
        compute: ComputeArgs | None = None,
        progress: bool = True,
        **setting_overrides: Any,
    ) -> None:
        settings = [settings] if isinstance(settings, (str, Setting)) else list(settings)
        methods = [methods] if isinstance(methods, (str, Method)) else list(methods)
        self.spec = SweepSpec(
            settings=tuple(as_setting(s, data_dir, dict(setting_overrides)) for s in settings),
            methods=tuple(as_method(m, proj_dim) for m in methods),
            ensembles=tuple(as_ensemble(e) for e in ensembles),
            lds=lds or LDSSpec(),
            base_seed=base_seed,
        )
        self.store = ArtifactStore(store)
        self.compute = compute or ComputeArgs()
        self._executor, self._address, self._progress = executor, address, progress
        self.results: pd.DataFrame | None = None

    @classmethod
    def from_spec(cls, spec: SweepSpec, store: str, **kw: Any) -> Sweep:
        sweep = cls.__new__(cls)
        sweep.spec = spec
        sweep.store = ArtifactStore(store)
        sweep.compute = kw.pop("compute", None) or ComputeArgs()
        sweep._executor = kw.pop("executor", "local")
        sweep._address = kw.pop("address", None)
        sweep._progress = kw.pop("progress", True)
        sweep.results = None
        return sweep

    def check(self) -> None:
        """Fail before any work if data is missing or the store is not writable."""
        from raytda.plan.jobs import dataset

        for s in self.spec.settings:
            dataset(s.data)
        self.store.check_writable()

    def plan(self) -> Plan:
        """What would run and what the store already has."""
        return make_plan(self.spec, self.store)

    def run(self, cost: str = "train_time_s") -> pd.DataFrame:
        """Run every missing job, then return one row per configuration."""
        from raytda.results import collect_results

        # The executor first: a Ray executor probes its cluster address on construction,
        # so a wrong --address fails before check() creates the store directory.
        executor = make_executor(self._executor, self.compute, self._address, self._progress)
        self.check()
        plan = self.plan()
        executor.execute(plan, self.store)
        self.results = collect_results(plan, self.store, cost)
        return self.results

    def plot(self, out_dir: str | Path = ".", fmt: str = "png") -> list[Path]:
        """LDS against training time, serving time and stored parameters."""
        from raytda.plot import plot_results

        if self.results is None:
            raise RuntimeError("run() the sweep before plotting it")
        return plot_results(self.results, out_dir, fmt)
