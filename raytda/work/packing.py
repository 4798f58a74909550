"""Which training jobs can be trained together as one stacked pack, and in what packs.

Pure bookkeeping (no torch): an executor asks :func:`pack_key` whether a job may join a
pack and with whom, and :func:`group_packs` to cut the compatible jobs into packs that fit
a memory budget; ``raytda.work.train.train_pack`` then trains one pack. Compatible means
what :mod:`raytda.core.stacked` needs to reproduce each job's own training: one
architecture and training data (the task's ``train_key``), one recipe, as many rows per
model, and raytda's own trainer (a Task overriding ``train`` trains alone).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

from raytda.ensembles.lora import TrainAdapter, TrainBase
from raytda.plan.job import Job
from raytda.plan.models import LDSModel, TrainModel
from raytda.task import Task


def _own_trainer(task: Task) -> bool:
    """Whether the task trains with raytda's ``fit`` (what stacked training reproduces)."""
    return type(task).train is Task.train and task.recipe is not None


def pack_key(job: Job) -> Hashable | None:
    """Jobs with equal keys may share a pack; None: the job trains alone.

    - LDS models: same training data, recipe and subset fraction (so equal row counts);
    - naive ensemble models: same training data and recipe (each on a random half);
    - LoRA adapters: same base model, LoRA spec and adapter recipe (the base is shared).
    LoRA base models (full training set, one per base) and imported models are not packed.
    """
    if isinstance(job, LDSModel):
        if not _own_trainer(job.task):
            return None
        return (LDSModel, job.task.train_key, job.task.recipe, job.lds.alpha)
    if isinstance(job, TrainModel) and not isinstance(job, TrainBase):
        if type(job) is not TrainModel or not _own_trainer(job.task):
            return None
        return (TrainModel, job.task.train_key, job.task.recipe)
    if isinstance(job, TrainAdapter):
        return (TrainAdapter, job.base.key, job.task.lora_spec, job.recipe)
    return None


def group_packs(jobs: Sequence[Job], budget_bytes: int,
                bytes_per_model: Callable[[Job], int], limit: int | None = None
                ) -> list[list[Job]]:
    """``jobs`` cut into packs: compatible jobs together (in their given order), at most
    as many per pack as ``budget_bytes`` holds at ``bytes_per_model(job)`` each (see
    ``raytda.core.stacked.bytes_per_model``) and at most ``limit``; a job that cannot be
    packed is a pack of one. Packs come in the order of their first job."""
    groups: dict[Hashable, list[Job]] = {}
    order: list[Hashable] = []
    for i, job in enumerate(jobs):
        key = pack_key(job)
        key = key if key is not None else ("alone", i)
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(job)
    packs: list[list[Job]] = []
    for key in order:
        members = groups[key]
        per = max(1, int(bytes_per_model(members[0])))
        size = max(1, int(budget_bytes // per))
        if limit:
            size = min(size, limit)
        packs += [members[i:i + size] for i in range(0, len(members), size)]
    return packs
