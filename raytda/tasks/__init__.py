"""Built-in Tasks, by name: the paper's settings and a few small ones.

Two kinds live behind one registry:

- Task classes, one file each (``cifar2-resnet9``: :mod:`raytda.tasks.cifar2_resnet9`,
  ``maestro-mt``: :mod:`raytda.tasks.maestro_mt`), built as
  ``cls(data_dir=..., full=..., **overrides)``; a new setting is a new file plus one line
  in ``TASKS`` (or :func:`register_task` from user code);
- the Setting specs of :mod:`raytda.settings` (``mnist-mlp``, ``cifar2-mlp``,
  ``shakespeare-gpt``, ...), wrapped as :class:`SettingTask`.

Task classes are named as ``module:Class`` strings and imported on first use, so importing
this package (the planner does) loads no model code and no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from raytda.task import Task
from raytda.tasks.setting import SettingTask

#: name -> "module:Class" of a Task class taking (data_dir=None, full=False, **overrides)
TASKS: dict[str, str] = {
    "cifar2-resnet9": "raytda.tasks.cifar2_resnet9:CIFAR2ResNet9Task",
    "maestro-mt": "raytda.tasks.maestro_mt:MaestroMTTask",
}


def register_task(name: str, cls: str | type[Task]) -> None:
    """Make ``get_task(name, ...)`` (and ``raytda sweep --setting name``) build ``cls``."""
    TASKS[name] = cls if isinstance(cls, str) else f"{cls.__module__}:{cls.__qualname__}"


def task_names() -> list[str]:
    """Every built-in name: Task classes and registered settings."""
    from raytda.settings import SETTINGS

    return sorted({*TASKS, *SETTINGS})


def task_class(name: str) -> type[Task]:
    module, _, cls = TASKS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def get_task(name: str, data_dir: str | None = None, full: bool = False,
             **overrides: Any) -> Task:
    """A built-in Task by name, reading its data from ``data_dir``.

    ``full=True`` gives the paper's scale for Task classes that also have a CPU scale;
    registered settings have one scale only (``mnist-mlp`` and ``cifar2-mlp`` are the
    paper's), so there it changes nothing. ``overrides`` set e.g. n_train, n_test, epochs.
    """
    if name in TASKS:
        return task_class(name)(data_dir=data_dir, full=full, **overrides)
    from raytda.settings import get_setting
    from raytda.specs import SpecError

    try:
        return SettingTask(get_setting(name, data_dir=data_dir, **overrides))
    except SpecError as e:
        if name in str(e) and "unknown setting" in str(e):
            raise SpecError(f"unknown setting {name!r}; choose one of {task_names()}") from None
        raise


def as_task(task: str | Task, data_dir: str | None = None,
            overrides: dict[str, Any] | None = None) -> Task:
    """A Task from a built-in name, a Setting or a Task object. ``data_dir`` sets where
    the data is (``Task.data_dir``, or a built-in's data root); ``overrides`` apply to
    built-in names only."""
    from raytda.specs import Setting, SpecError
    from raytda.tasks.scaled import ScaledTask

    overrides = dict(overrides or {})
    if isinstance(task, Task):
        if overrides:
            raise SpecError(f"setting overrides {sorted(overrides)} apply to built-in settings "
                            f"only; configure your own Task {task.name!r} directly")
        if data_dir is not None and isinstance(task, SettingTask):
            s = task.setting
            return SettingTask(s.replace(data=s.data.replace(root=data_dir)))
        if data_dir is not None and isinstance(task, ScaledTask):
            return task.with_data_dir(data_dir)
        if data_dir is not None:
            import copy

            task = copy.copy(task)
            task.data_dir = data_dir
        return task
    if isinstance(task, Setting):
        if data_dir is not None:
            task = task.replace(data=task.data.replace(root=data_dir))
        return SettingTask(task)
    return get_task(task, data_dir=data_dir, **overrides)


__all__ = ["TASKS", "SettingTask", "Task", "as_task", "get_task", "register_task", "task_names"]
