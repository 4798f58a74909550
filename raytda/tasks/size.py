"""What a Task's defaults are chosen from: its train rows and its model's parameters.

Read once per Task object and kept on it (a sweep plans many configurations of one Task):
a built-in's train size is its ``n_train`` setting (no file is read); a user Task's is its
train data's length (loaded once per process, as the sweep's check loads it anyway). The
parameter count is that of ``build_model()``: the width of a per-sample gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from raytda.task import Task


@dataclass(frozen=True)
class TaskSize:
    """Train rows ``n_train`` and trainable parameters ``n_params`` of a Task."""

    n_train: int
    n_params: int


def task_size(task: Task) -> TaskSize:
    """``task``'s size (computed on first use, then kept on the Task object)."""
    known = task.__dict__.get("_task_size")
    if known is None:
        known = TaskSize(_n_train(task), _n_params(task))
        object.__setattr__(task, "_task_size", known)  # Tasks may be frozen dataclasses
    return known


def _n_train(task: Task) -> int:
    settings = getattr(task, "settings", None)
    if isinstance(settings, dict) and isinstance(settings.get("n_train"), int):
        return settings["n_train"]
    return task.data().n_train


def _n_params(task: Task) -> int:
    from raytda.core.grads import n_trainable

    return n_trainable(task.build_model())
