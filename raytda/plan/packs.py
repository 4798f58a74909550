"""Training jobs trained together: a pack of compatible jobs (one ``Job.pack_key``) as
one job of the executor, each member still its own artifact under its own key.

Both executors make a :class:`TrainPack` the same way (:func:`gather_pack`, over their
job graph's ready jobs): the ready training jobs that share a pack key
(``ComputeArgs.train_pack`` at most), and on Ray split among the actors that could take
them. The pack's body trains them stacked (:func:`raytda.work.train.train_pack`, cut into
sub-packs that fit the memory budget) and stores each member as its own job would, bit
for bit. Nothing is keyed by the pack: a rerun plans only the members that are missing,
packed or not, and a pack run again (its actor was killed and Ray retried the call) trains
only its members that are not stored yet.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from raytda.plan.job import Job
from raytda.specs import stable_hash

if TYPE_CHECKING:
    from raytda.core.args import ComputeArgs
    from raytda.store import ArtifactStore


@dataclass(frozen=True, repr=False)
class TrainPack(Job):
    """Training jobs of one pack key, trained as one stacked pack."""

    members: tuple[Job, ...]
    kind: str = field(default="pack", init=False)

    def __post_init__(self) -> None:
        keys = {m.pack_key() for m in self.members}
        if not self.members or len(keys) != 1 or None in keys:
            raise ValueError("a pack holds training jobs of one pack key")

    @property
    def task(self):  # type: ignore[override]
        return self.members[0].task

    def spec(self) -> dict[str, Any]:
        # its lease's name only: no artifact is stored under a pack's key
        return {"members": [m.key for m in self.members]}

    @property
    def key(self) -> str:  # type: ignore[override]
        return f"pack-{stable_hash(sorted(m.key for m in self.members), 20)}"

    def deps(self) -> tuple[Job, ...]:
        seen: dict[str, Job] = {}
        for m in self.members:
            for d in m.deps():
                seen.setdefault(d.key, d)
        return tuple(seen.values())

    def complete(self, store: ArtifactStore) -> bool:
        return all(store.has(m.key) and m.complete(store) for m in self.members)

    def analytic_work(self, n_train: int, n_test: int) -> float | None:
        works = [m.analytic_work(n_train, n_test) for m in self.members]
        return None if any(w is None for w in works) else float(sum(works))

    def describe(self) -> str:
        return f"train {len(self.members)} packed: {self.members[0].describe()}, ..."

    def stored_jobs(self) -> tuple[Job, ...]:
        return self.members

    def narrowed(self, keys: set[str]) -> Job:
        members = tuple(m for m in self.members if m.key in keys)
        # one member left trains alone, as its own job (its record says so)
        return members[0] if len(members) == 1 else TrainPack(members)

    def run(self, store: ArtifactStore, args: ComputeArgs) -> None:
        from raytda.work.train import train_pack

        # The worker leases each member and narrows the pack to those it got, so a
        # retried pack (its actor died after some sub-packs were stored) trains only the
        # rest: each member is resumable by itself.
        train_pack(self.members, store, args)


#: ``train_pack="auto"`` packs no fewer models than this. A stacked step carries a fixed
#: cost (vmap, ``functional_call``, per-model losses) that only several models repay.
#: Measured on digits-mlp (17k parameters, the most overhead-bound built-in), CPU seconds
#: per model alone against stacked, two rounds (benchmarks/bench_pack_size.py, results in
#: benchmarks/results/pack_size_2026-12-07.md): 2 models 0.45-0.52x, 3 0.74-0.81x, 4
#: 0.80-1.00x, 5 1.08-1.28x, 10 1.50-1.59x.
SMALLEST_AUTO_PACK = 5


def gather_pack(job: Job, ready: Iterable[Job], store: ArtifactStore, limit: int | None,
                spread: int = 1) -> TrainPack | None:
    """``job`` and the jobs of ``ready`` that may train with it (one ``Job.pack_key``),
    none of them stored already, in ``ready``'s order: at most ``limit`` (None: no limit
    here, the pack's body cuts it to the memory budget) and at most a ``spread``-th of
    them, rounded up (the Ray executor spreads one key's ready jobs over the actors that
    could take them). None when ``job`` would train alone, as it does under ``"auto"``
    (``limit`` None) when fewer than :data:`SMALLEST_AUTO_PACK` would share its pack.

    The one grouping rule of both executors; only ``spread`` (their placement) differs.
    """
    key = job.pack_key()
    if key is None or limit == 1 or store.has(job.key):
        return None
    members = [job] + [j for j in ready if j.key != job.key and j.pack_key() == key
                       and not store.has(j.key)]
    size = math.ceil(len(members) / max(1, spread))
    if limit is not None:
        size = min(size, limit)
    smallest = SMALLEST_AUTO_PACK if limit is None else 2
    return TrainPack(tuple(members[:size])) if size >= smallest else None
