"""Built-in Tasks, by name: the paper's settings and a few small ones.

Every built-in is a :class:`~raytda.tasks.builtin.BuiltinTask` subclass declared with the
same schema (settings dicts ``CPU`` and ``FULL``, its own ``build_model`` / ``load`` /
``output``), in a file per family: :mod:`raytda.tasks.mlp` (``toy-mlp``, ``digits-mlp``,
``mnist-mlp``, ``cifar2-mlp``), :mod:`raytda.tasks.gpt` (``toy-gpt``,
``shakespeare-gpt``), :mod:`raytda.tasks.cifar2_resnet9`, :mod:`raytda.tasks.mnist_resnet9`
and :mod:`raytda.tasks.maestro_mt`.
Each is built as ``cls(data_dir=..., full=..., **overrides)``; a new setting is a new class
plus one line in ``TASKS`` (or :func:`register_task` from user code).

Task classes are named as ``module:Class`` strings and imported on first use, so importing
this package (the planner does) loads no model code and no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from raytda.specs import SpecError
from raytda.task import Task

#: name -> "module:Class" of a Task class taking (data_dir=None, full=False, **overrides)
TASKS: dict[str, str] = {
    "toy-mlp": "raytda.tasks.mlp:ToyMLPTask",
    "digits-mlp": "raytda.tasks.mlp:DigitsMLPTask",
    "mnist-mlp": "raytda.tasks.mlp:MNISTMLPTask",
    "cifar2-mlp": "raytda.tasks.mlp:CIFAR2MLPTask",
    "toy-gpt": "raytda.tasks.gpt:ToyGPTTask",
    "shakespeare-gpt": "raytda.tasks.gpt:ShakespeareGPTTask",
    "cifar2-resnet9": "raytda.tasks.cifar2_resnet9:CIFAR2ResNet9Task",
    "mnist-resnet9": "raytda.tasks.mnist_resnet9:MNISTResNet9Task",
    "maestro-mt": "raytda.tasks.maestro_mt:MaestroMTTask",
}


def register_task(name: str, cls: str | type[Task]) -> None:
    """Make ``get_task(name, ...)`` (and ``raytda sweep --setting name``) build ``cls``."""
    TASKS[name] = cls if isinstance(cls, str) else f"{cls.__module__}:{cls.__qualname__}"


def task_names() -> list[str]:
    """Every built-in (and registered) Task name."""
    return sorted(TASKS)


def task_class(name: str) -> type[Task]:
    """The Task class registered as ``name`` (a SpecError naming the choices if none)."""
    if name not in TASKS:
        raise SpecError(f"unknown setting {name!r}; choose one of {task_names()}")
    module, _, cls = TASKS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def get_task(name: str, data_dir: str | None = None, full: bool = False,
             **overrides: Any) -> Task:
    """A built-in Task by name, reading its data from ``data_dir``.

    ``full=True`` gives the paper's scale (``FULL``; the same as the default for tasks
    with one scale). ``overrides`` set any of the task's settings or Recipe fields, e.g.
    n_train, n_test, seed, epochs (the kept checkpoints follow), lr, dropout.
    """
    return task_class(name)(data_dir=data_dir, full=full, **overrides)


def as_task(task: str | Task, data_dir: str | None = None,
            overrides: dict[str, Any] | None = None) -> Task:
    """A Task from a built-in name or a Task object. ``data_dir`` sets where the data is
    (``Task.data_dir``, or a built-in's data root); ``overrides`` apply to built-in names
    only."""
    from raytda.tasks.builtin import BuiltinTask

    overrides = dict(overrides or {})
    if isinstance(task, Task):
        if overrides:
            raise SpecError(f"setting overrides {sorted(overrides)} apply to built-in settings "
                            f"only; configure your own Task {task.name!r} directly")
        if data_dir is not None and isinstance(task, BuiltinTask):
            return task.with_data_dir(data_dir)
        if data_dir is not None:
            import copy

            from raytda.store.uri import absolute_location

            task = copy.copy(task)
            # Absolute here, in the driver: workers unpickle the Task in their own cwd.
            task.data_dir = absolute_location(str(data_dir))
        return task
    return get_task(task, data_dir=data_dir, **overrides)


__all__ = ["TASKS", "Task", "as_task", "get_task", "register_task", "task_class", "task_names"]
