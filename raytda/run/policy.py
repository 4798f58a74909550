"""Where and how the Ray executor runs a job: GPU shares, actor affinity, user code.

Driver-side decisions only; nothing here runs on a worker.
"""

from __future__ import annotations

from collections.abc import Callable

from raytda.core.args import ComputeArgs
from raytda.plan.job import Job
from raytda.plan.planner import Plan

GpuPolicy = float | Callable[[Job], float] | None


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    import os

    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def node_room(resources: dict[str, float], cpus: int, share: float = 0.0,
              accel: str = "GPU", cores: int | None = None) -> int:
    """How many of the pool's actors (``cpus`` CPUs and ``share`` of ``accel`` each) a
    node with these Ray resources holds; 0 for a node without CPUs.

    ``cores``: the cores the node really has, once known. A node may declare more CPUs
    than it has (``ray start --num-cpus=4`` on two cores); actors beyond one per ``cpus``
    of its cores would only take turns on the same cores, after paying for their own
    start-up (a torch import and a warm-up each), so they are not started. Measured on
    two cores with ``--num-cpus=4``: four actors made the issue-20 sweep 0.86x as fast
    as in-process, two 0.99x (benchmarks/README.md, "Ray scaling")."""
    n = int(resources.get("CPU", 0) // max(1, cpus))
    if share > 0:
        n = min(n, int(resources.get(accel, 0) / share + 1e-9))
    if cores:
        n = min(n, max(1, cores // max(1, cpus)))
    return n


def actor_compute_args(args: ComputeArgs, actors_on_node: int) -> ComputeArgs:
    """An actor's ComputeArgs: the node's memory budget divided among its actors, so
    that a full node's caches together stay within ``args.memory_budget_bytes``."""
    return args.share(actors_on_node)


def model_params(job: Job) -> int:
    """Parameter count of the job's model, from an unallocated (meta-device) instance."""
    import torch

    with torch.device("meta"):
        return sum(p.numel() for p in job.task.build_model().parameters())


def default_gpu_share(job: Job) -> float:
    """Quarter of a GPU for small models (4 jobs share a device), a whole one otherwise."""
    if not job.accelerated:
        return 0.0
    return 0.25 if model_params(job) < 5_000_000 else 1.0


def ship_task_code(plan: Plan) -> None:
    """Pickle user Task classes by value, so workers need not import the user's module.

    A Task defined in a script, a notebook or a test file lives in a module the workers
    cannot import (``ray job submit --working-dir`` makes a project importable, but a
    driver started from a REPL has no such thing). raytda's own classes and installed
    packages are pickled by reference as usual.
    """
    import sys

    from ray import cloudpickle

    for job in plan.jobs:
        for cls in type(job.task).__mro__:
            mod = sys.modules.get(cls.__module__)
            name = cls.__module__.split(".")[0]
            if mod is None or name in ("raytda", "builtins", "__main__") \
                    or "site-packages" in (getattr(mod, "__file__", None) or "site-packages"):
                continue
            cloudpickle.register_pickle_by_value(mod)
    _ship_lru_caches_by_value(cloudpickle)


def _ship_lru_caches_by_value(cloudpickle) -> None:
    """Send ``functools.lru_cache`` wrappers of by-value modules as the function they wrap.

    pickle sends such a wrapper (a C object) by its qualified name, even from a module
    registered by value, so a worker that cannot import the user's script fails to load
    the Task whose methods call it. The wrapper is rebuilt there around the shipped
    function, with an empty cache of its own. Wrappers of importable modules keep their
    usual by-name pickling.
    """
    import functools
    import sys

    from ray.cloudpickle.cloudpickle import _is_registered_pickle_by_value

    def reduce(wrapper):
        mod = sys.modules.get(getattr(wrapper, "__module__", None) or "")
        if mod is None or not _is_registered_pickle_by_value(mod):
            return wrapper.__reduce__()
        params = wrapper.cache_parameters()
        return _rebuilt_lru_cache, (wrapper.__wrapped__, params["maxsize"], params["typed"])

    cloudpickle.CloudPickler.dispatch_table[functools._lru_cache_wrapper] = reduce


def _rebuilt_lru_cache(fn, maxsize: int | None, typed: bool):
    """The worker side of :func:`_ship_lru_caches_by_value`."""
    import functools

    return functools.lru_cache(maxsize=maxsize, typed=typed)(fn)
