"""Executors, registered by name like the other parts: the in-process one and the Ray one.

An executor runs a plan's jobs against a store (``execute(plan, store)``). Both built-in
ones walk the same :class:`~raytda.run.job_graph.JobGraph`; they differ in where a job
runs (this process, or an actor on any node). Each kind says what a caller needs to know
without naming it: whether its jobs run on cluster actors (``distributed``: a Tune trial
that farms its jobs out only coordinates) and whether it joins a cluster by address.
``register_executor`` adds one from any module; ``Sweep(executor=obj)`` also takes any
object with ``execute``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from raytda.core.args import ComputeArgs
from raytda.registry import Registry


class ExecutorKind:
    """How to make one kind of executor. Subclass, set ``name``, implement ``make``."""

    name: ClassVar[str] = ""
    #: its jobs run on cluster actors, not in the calling process
    distributed: ClassVar[bool] = False
    #: it joins a running cluster when given an address (``--address``)
    joins_cluster: ClassVar[bool] = False
    #: one line for ``--help`` and ``raytda list``
    summary: ClassVar[str] = ""

    def make(self, compute: ComputeArgs, address: str | None, progress: bool) -> Any:
        raise NotImplementedError


EXECUTORS: Registry[ExecutorKind] = Registry("executor")
register_executor = EXECUTORS.register


@register_executor
class InProcess(ExecutorKind):
    name = "local"
    summary = "in this process, one job at a time"

    def make(self, compute, address, progress):
        from raytda.run.local import InProcessExecutor

        return InProcessExecutor(compute, progress)


@register_executor
class OnRay(ExecutorKind):
    name = "ray"
    distributed = True
    joins_cluster = True
    summary = "on Ray actors: a local Ray, or the cluster at --address"

    def make(self, compute, address, progress):
        from raytda.run.ray_executor import RayExecutor

        return RayExecutor(compute, address=address, progress=progress)


#: what runs a sweep when nothing is said: in-process, or the cluster an address names
DEFAULT_EXECUTOR = InProcess.name


def default_executor(address: str | None) -> str:
    """The executor a sweep uses when none is named: one that joins the cluster at
    ``address`` when one is given, else the in-process one."""
    if address:
        return next(k.name for k in EXECUTORS.values() if k.joins_cluster)
    return DEFAULT_EXECUTOR


def executor_kind(executor: Any) -> ExecutorKind | None:
    """The registered kind ``executor`` names; None for an executor object."""
    return EXECUTORS.lookup(executor) if isinstance(executor, str) else None


def make_executor(executor: Any, compute: ComputeArgs, address: str | None = None,
                  progress: bool = True):
    """A registered executor by name (``"local"``, ``"ray"``, ...) or an executor object."""
    if not isinstance(executor, str) and hasattr(executor, "execute"):
        return executor
    if not isinstance(executor, str):
        from raytda.specs import SpecError

        raise SpecError(f"unknown executor {executor!r}; use one of {sorted(EXECUTORS)} or "
                        f"an object with execute(plan, store)")
    return EXECUTORS.lookup(executor).make(compute, address, progress)
