"""A Task's data, loaded once per process (Ray actors and workers reuse it across jobs)."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from raytda.data import TaskData
    from raytda.task import Task

_CACHE: OrderedDict[str, TaskData] = OrderedDict()
MAX_TASKS = 4


def task_data(task: Task) -> TaskData:
    """``task``'s train and test samples, from the cache when this process has them."""
    from raytda.data import TaskData, as_samples

    key = task.key
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    workers = task.data_loader_workers
    train, test = as_samples(task.train_data()), as_samples(task.test_data())
    for s in (train, test):
        if hasattr(s, "num_workers"):
            s.num_workers = workers
    data = TaskData(train, test)
    _CACHE[key] = data
    while len(_CACHE) > MAX_TASKS:
        _CACHE.popitem(last=False)
    return data
