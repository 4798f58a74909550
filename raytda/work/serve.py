"""Bodies of the serving jobs: a member's Q on the train set, and its method payload."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from raytda.core.args import ComputeArgs
from raytda.core.costs import Measured, measure
from raytda.core.masks import MaskSpec
from raytda.core.network import Network
from raytda.methods import Method
from raytda.methods.context import MemberContext
from raytda.plan.seeds import mask_seed, projection_seed
from raytda.specs import Member
from raytda.store import ArtifactStore

if TYPE_CHECKING:
    from raytda.plan.members import MemberBlock, QValues, Source


def load_member(store: ArtifactStore, source: Source, member: Member) -> Network:
    """The member's network in eval mode, as its source model builds it (trained weights
    at its checkpoint, or a base model with its LoRA adapter)."""
    return source.task.network(source.member_module(store, member)).eval()


def member_mask(net: Network, source: Source, member: Member, mode: str) -> MaskSpec | None:
    """The member's dropout masks: seeded by (model, checkpoint, mask), rates of the sites."""
    if member.mask is None:
        return None
    return MaskSpec(mask_seed(source, member), net.mask_rates, mode)


def warm_member_imports(source: Source) -> None:
    """Import what loading the member needs before serving is timed."""
    source.warm_imports()


@contextmanager
def serving(job: QValues | MemberBlock, store: ArtifactStore, args: ComputeArgs
            ) -> Iterator[tuple[Network, MaskSpec | None, Measured]]:
    """Load a member and its masks inside the measured block; ``Measured`` fills on exit."""
    warm_member_imports(job.model)
    with measure(args.device) as m:
        net = load_member(store, job.model, job.member)
        yield net, member_mask(net, job.model, job.member, job.mask_mode), m


def q_values(job: QValues, store: ArtifactStore, args: ComputeArgs) -> None:
    from raytda.core.grads import samples_outputs

    task = job.task
    with serving(job, store, args) as (net, mask, m):
        _, q = samples_outputs(net, task.data().train, mask, "train", args.forward_batch,
                               args.device, task.output())
    store.put(job.key, {"q": q}, {"serve_time_s": m.seconds, "serve_wall_s": m.wall_s,
                                  "cost_clock": m.clock, "peak_bytes": m.peak_bytes}, job.spec())


def declared_inputs(store: ArtifactStore, block: MemberBlock) -> dict[str, dict]:
    """The tensors of the jobs ``block``'s method and features part declared, as
    ``member_context``'s ``inputs`` and ``feature_inputs``."""
    def load(jobs):
        return {name: store.get(job.key)[0] for name, job in jobs.items()}

    return {"inputs": load(block.method_inputs), "feature_inputs": load(block.feature_inputs)}


def member_context(net: Network, source: Source, member: Member, mask: MaskSpec | None,
                   method: Method, args: ComputeArgs, keep: bool = True,
                   wants_q: bool = False, inputs: dict[str, dict] | None = None,
                   feature_inputs: dict[str, dict] | None = None) -> MemberContext:
    """What ``method`` is given to serve this member (its data, seeds and features);
    ``wants_q``: the member's Q is read off its train features' pass."""
    task = source.task
    data = task.data()
    rows = source.training_rows(data.n_train) if method.impl.uses_training_rows else None
    return MemberContext(net, task, data, mask, projection_seed(source, member), args,
                         method.features_part, rows, keep, wants_q, inputs=dict(inputs or {}),
                         feature_inputs=dict(feature_inputs or {}))


def member_block(job: MemberBlock, store: ArtifactStore, args: ComputeArgs) -> None:
    impl = job.method.impl
    q_part = job.q_part()
    with serving(job, store, args) as (net, mask, m):
        ctx = member_context(net, job.model, job.member, mask, job.method, args,
                             wants_q=q_part is not None, **declared_inputs(store, job))
        payload, info = impl.member(job.method, ctx)
    # A projection reused from an earlier job of this worker is charged its build time, so
    # the cost does not depend on which worker served which member before.
    seconds = m.seconds + float(info.get("projection_reused_s", 0.0))
    if q_part is not None:
        if ctx.train_q is None:
            raise RuntimeError(f"method {job.method.name!r} made its payload without "
                               f"MemberContext.train_features, so no Q came out of its pass")
        # Before the block's record, so a stored block always has its Q. Its time is in
        # the block's serve_time_s (the pass it came from), none of its own.
        store.put(q_part.key, {"q": ctx.train_q},
                  {"serve_time_s": 0.0, "serve_wall_s": 0.0, "from_features": job.key},
                  {"of": job.key, "q": True})
    store.put(job.key, payload,
              {"serve_time_s": seconds, "serve_wall_s": m.wall_s, "cost_clock": m.clock,
               "peak_bytes": m.peak_bytes, **info}, job.spec())
