"""Built-in Tasks: the registered settings of :mod:`raytda.settings` behind the Task API."""

from __future__ import annotations

from typing import Any

from raytda.task import Task
from raytda.tasks.setting import SettingTask


def get_task(name: str, data_dir: str | None = None, **overrides: Any) -> SettingTask:
    """A built-in setting as a Task (see :func:`raytda.settings.get_setting`)."""
    from raytda.settings import get_setting

    return SettingTask(get_setting(name, data_dir=data_dir, **overrides))


def as_task(task: str | Task, data_dir: str | None = None,
            overrides: dict[str, Any] | None = None) -> Task:
    """A Task from a built-in name, a Setting or a Task object. ``data_dir`` sets where
    the data is (``Task.data_dir``); ``overrides`` apply to built-in settings only."""
    from raytda.specs import Setting, SpecError

    overrides = dict(overrides or {})
    if isinstance(task, Task):
        if overrides:
            raise SpecError(f"setting overrides {sorted(overrides)} apply to built-in settings "
                            f"only; configure your own Task {task.name!r} directly")
        if data_dir is not None and isinstance(task, SettingTask):
            s = task.setting
            return SettingTask(s.replace(data=s.data.replace(root=data_dir)))
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


__all__ = ["SettingTask", "Task", "as_task", "get_task"]
