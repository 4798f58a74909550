"""A Task's data, loaded once per process, and its fingerprints.

Loaded data is cached under the Task's content key, which holds the data's fingerprints
(:meth:`raytda.task.Task.data_identity`), so two Task objects of one name and version
whose data differ never share an entry. A process that loads data for a Task whose
fingerprints were taken elsewhere (a Ray worker, given the pickled Task) hashes what it
loaded and refuses to work on data that differs from the driver's.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from raytda.specs import SpecError

if TYPE_CHECKING:
    from raytda.data import TaskData
    from raytda.data.check import TargetRule
    from raytda.task import Task

_CACHE: OrderedDict[str, TaskData] = OrderedDict()
MAX_TASKS = 4


def load_task_data(task: Task) -> TaskData:
    """Read ``task``'s train and test data afresh (no cache)."""
    from raytda.data import TaskData, as_samples

    train, test = as_samples(task.train_data()), as_samples(task.test_data())
    for s in (train, test):
        if hasattr(s, "num_workers"):
            s.num_workers = task.data_loader_workers
    return TaskData(train, test)


def scan_task_data(task: Task, data: TaskData,
                   rules: dict[str, TargetRule | None] | None = None) -> dict[str, Any]:
    """Check every row of both splits and return their fingerprints (see
    :mod:`raytda.data.check`); ``rules`` says what each split's targets must be."""
    from raytda.data.check import scan

    rules = rules or {}
    where = f"task {task.name!r}"
    hashed = task.data_version is None
    ident = {split: scan(getattr(data, split), split, where, rules.get(split), hashed)
             for split in ("train", "test")}
    if not hashed:
        for split in ident:
            ident[split]["data_version"] = str(task.data_version)
    return ident


def remember(task: Task, data: TaskData, identity: dict[str, Any]) -> None:
    """Give ``task`` these fingerprints and cache ``data`` under its key."""
    task.set_data_identity(identity)
    _CACHE[task.key] = data
    _CACHE.move_to_end(task.key)
    while len(_CACHE) > MAX_TASKS:
        _CACHE.popitem(last=False)


def fingerprint_task(task: Task) -> dict[str, Any]:
    """Read, check and fingerprint ``task``'s data; remember both (first key asked for)."""
    data = load_task_data(task)
    identity = scan_task_data(task, data)
    remember(task, data, identity)
    return identity


def task_data(task: Task) -> TaskData:
    """``task``'s train and test samples, from the cache when this process has them."""
    known = task.known_data_identity()
    if known is None:
        task.data_identity()  # reads, fingerprints and caches the data
        return _CACHE[task.key]
    key = task.key
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    data = load_task_data(task)
    here = scan_task_data(task, data)
    if here != known:
        raise SpecError(f"task {task.name!r}: the data this process ({_where()}) loaded differs "
                        f"from the data the sweep was planned with; make train_data()/"
                        f"test_data() give the same rows on every machine (same files at "
                        f"--data-dir)")
    remember(task, data, known)
    return data


def _where() -> str:
    import os
    import platform

    return f"{platform.node()} pid {os.getpid()}"
