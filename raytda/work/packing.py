"""Which training jobs can be trained together as one stacked pack, and in what packs.

Pure bookkeeping (no torch): an executor asks :func:`pack_key` whether a job may join a
pack and with whom, and :func:`group_packs` to cut the compatible jobs into packs that fit
a memory budget; ``raytda.work.train.train_pack`` then trains one pack. Compatible means
what :mod:`raytda.core.stacked` needs to reproduce each job's own training: one
architecture and training data (the task's ``train_key``), one recipe, as many rows per
model, and raytda's own trainer (a Task overriding ``train`` trains alone). Each job
class says whether and with whom it packs (``Job.pack_key``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

from raytda.plan.job import Job


def pack_key(job: Job) -> Hashable | None:
    """Jobs with equal keys may share a pack (each job class's ``pack_key``); None: the
    job trains alone. LDS models pack by training data, recipe and subset fraction; naive
    ensemble models by training data and recipe; LoRA adapters by base model, LoRA spec
    and adapter recipe. LoRA base models and imported models, and every model of a Task
    with its own ``train``, train alone."""
    return job.pack_key()


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
