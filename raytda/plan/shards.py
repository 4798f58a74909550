"""Members whose train side is built in row shards: the rule that decides it, and the jobs.

A member's train features are n_train x k float32. When that exceeds what one process may
keep of a member (``ComputeArgs.payload_cache_bytes``, the evaluation's share of the
memory budget), or when ``ComputeArgs.train_shard_rows`` says so, and its method can
(:class:`~raytda.methods.sharded.ShardedTrainSide`), its one :class:`MemberBlock` becomes
one :class:`TrainShard` job per row range of the train split plus one
:class:`ShardedMemberBlock` that reduces them (TRAK: the kernel, its Cholesky factor and
the test features). The shard jobs depend on the model only, so an executor runs them on
whichever actors are free, on any node; the reducing job's record lists them, and
evaluation and the Attributor score per (test rows, train shard).

The rule is how to compute, not what: it never enters a key. A configuration's result key
is the same sharded or not; a sharded member's reducing job is keyed by its member and
method only (its shards by their rows too), so planning with another shard size makes
new shards and the reduction again, with the same scores up to float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from raytda.plan.job import BACKWARD_PASS, FeaturePart, Job
from raytda.plan.members import MemberBlock, member_deps, member_label
from raytda.specs import SpecError

if TYPE_CHECKING:
    from raytda.core.args import ComputeArgs
    from raytda.plan.evaluate import Evaluate
    from raytda.store import ArtifactStore


@dataclass(frozen=True)
class ShardRule:
    """When a member's train side is sharded, and in shards of how many rows.

    ``member_bytes``: the most bytes of one member's train features a process may hold;
    ``rows``: rows per shard given explicitly (then every member of a method that can
    shard is sharded when it has more train rows than that)."""

    member_bytes: int
    rows: int | None = None

    @classmethod
    def of(cls, args: ComputeArgs) -> ShardRule:
        """The rule of a ComputeArgs: its payload cache share and ``train_shard_rows``."""
        return cls(int(args.payload_cache_bytes), args.train_shard_rows)

    def shard_rows(self, n_train: int, dim: int) -> int | None:
        """Rows per shard for a train side of ``n_train`` x ``dim`` float32, or None when
        it is built whole."""
        if self.rows is not None:
            return self.rows if self.rows < n_train else None
        if n_train * dim * 4 <= self.member_bytes:
            return None
        # Half the share: a shard, the member's reduced payload and the score block of a
        # test chunk against the shard fit the share together.
        return max(1, self.member_bytes // 2 // (dim * 4))


def rule_of(ev: Evaluate) -> ShardRule:
    """The evaluation's rule: the one its planner gave it (from the sweep's ComputeArgs),
    else the default ComputeArgs' (so every code path plans the same jobs by default)."""
    if ev.shards is not None:
        return ev.shards
    from raytda.core.args import ComputeArgs

    return ShardRule.of(ComputeArgs())


def member_job(ev: Evaluate, block: MemberBlock) -> MemberBlock:
    """``block``, or its sharded form when its method can shard and ``ev``'s rule says its
    train side is too large to build whole."""
    from raytda.methods.sharded import can_shard

    impl = block.method.impl
    dim = block.method.feature_dim
    if not can_shard(impl) or dim is None:  # exact gradients: width unknown when planning
        return block
    n_train = int(ev.task.data_identity()["train"]["rows"])
    rule = rule_of(ev)
    row_bytes = dim * 4
    if rule.rows is None and n_train * row_bytes > rule.member_bytes \
            and row_bytes > rule.member_bytes // 2:
        # Not even a one-row shard fits its half of the share: the jobs would run out of
        # memory (or thrash) instead of running in it.
        gib = 2 ** 30
        raise SpecError(
            f"{block.method.name}'s {dim:,} feature dimensions take {row_bytes / gib:.1f} GiB "
            f"a train row, more than a train shard may hold under the memory budget "
            f"({rule.member_bytes // 2 / gib:.1f} GiB); lower the projection dimension "
            f"(--proj-dim) or raise --memory-budget")
    rows = rule.shard_rows(n_train, dim)
    if rows is None:
        return block
    return ShardedMemberBlock(block.model, block.member, block.method, block.mask_mode,
                              n_train=n_train, rows_per_shard=rows)


@dataclass(frozen=True, repr=False)
class TrainShard(Job):
    """Features of train rows [start, stop) of one member (``block``'s member and method),
    as the method stores a shard of them. Keyed without the test set: a train side."""

    block: MemberBlock
    start: int
    stop: int
    kind: str = field(default="shard", init=False)

    def run(self, store: ArtifactStore, args: ComputeArgs) -> None:
        from raytda.work.shards import train_shard

        train_shard(self, store, args)

    @property
    def task(self):  # type: ignore[override]
        return self.block.task

    def analytic_work(self, n_train: int, n_test: int) -> float | None:
        return (self.stop - self.start) * BACKWARD_PASS  # a gradient of each of its rows

    def spec(self) -> dict[str, Any]:
        member = {k: v for k, v in self.block.spec().items() if k != "test"}
        return {**member, "train_rows": [self.start, self.stop]}

    def deps(self) -> tuple[Job, ...]:
        return (*member_deps(self.block.model), *self.block.inputs.values())

    def affinity(self) -> str | None:
        return self.block.model.key

    def describe(self) -> str:
        b = self.block
        return (f"{b.method.name} train features {self.start}-{self.stop - 1} of "
                f"{member_label(b.member)} of {self.task.name}")


@dataclass(frozen=True, repr=False)
class ShardedMemberBlock(MemberBlock):
    """A member's payload reduced from its train shards (``shards()``, its inputs): what
    a MemberBlock stores but the per-row train tensors, which stay in the shards. Its
    record lists them (``train_shards``: rows and key, in row order) and charges their
    serving to the member: ``serve_time_s`` is the shards' and its own, summed."""

    n_train: int = 0
    rows_per_shard: int = 1

    def run(self, store: ArtifactStore, args: ComputeArgs) -> None:
        from raytda.work.shards import reduce_shards

        reduce_shards(self, store, args)

    whole_pass = False  # its shards featurize the train rows: its Q keeps its own job

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "train_shards": True}

    def work_shape(self) -> dict[str, Any] | None:
        # its cost is mostly its shards', summed into it: no class of equal work
        return None

    def whole(self) -> MemberBlock:
        """The same member built whole (what its shards split)."""
        return MemberBlock(self.model, self.member, self.method, self.mask_mode)

    def shards(self) -> tuple[TrainShard, ...]:
        whole, r = self.whole(), self.rows_per_shard
        return tuple(TrainShard(whole, a, min(self.n_train, a + r))
                     for a in range(0, self.n_train, r))

    def deps(self) -> tuple[Job, ...]:
        return (*member_deps(self.model), *self.inputs.values(), *self.shards())

    def parts(self) -> tuple[FeaturePart, ...]:
        return (FeaturePart(self.model, self.member, self.mask_mode, self.key),)

    def complete(self, store: ArtifactStore) -> bool:
        """Every shard its record lists is there."""
        return all(store.has(s["key"]) for s in store.meta(self.key).get("train_shards", ()))

    def describe(self) -> str:
        return (f"{super().describe()} from {len(range(0, self.n_train, self.rows_per_shard))} "
                f"train shards")
