"""Bodies of the train-shard jobs (:mod:`raytda.plan.shards`) and how a sharded member's
stored payload is read back.

A shard job featurizes rows [a, b) of the train split with the member's featurizer (the
same network, masks keyed by split row, projection seed as its whole MemberBlock) and
stores what the method keeps of them. The reducing job featurizes the test split, reads
the shards back one at a time and stores the member's payload without its per-row train
tensors; its record lists the shards, which is how evaluation and the Attributor find
them (:func:`stored_shards`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

from raytda.core.args import ComputeArgs
from raytda.store import ArtifactStore
from raytda.work.serve import declared_inputs, member_context, serving

if TYPE_CHECKING:
    from raytda.plan.shards import ShardedMemberBlock, TrainShard

Shard = tuple[int, int, str]  # train rows [start, stop) and the shard's key


def train_shard(job: TrainShard, store: ArtifactStore, args: ComputeArgs) -> None:
    block = job.block
    impl, dim = block.method.impl, block.method.feature_dim
    with serving(block, store, args) as (net, mask, m):
        ctx = member_context(net, block.model, block.member, mask, block.method, args,
                             **declared_inputs(store, block))
        fz = ctx.featurizer(dim)
        rows = ctx.data.train.subset(np.arange(job.start, job.stop))
        # offset: per-sample masks are keyed by the row's number in the whole train split
        feats = fz.features(rows, ctx.mask, "train", offset=job.start)
        payload = impl.shard_payload(block.method, feats)
    # A projection reused from an earlier job is charged its build time (as MemberBlocks).
    seconds = m.seconds + fz.reused_s()
    store.put(job.key, payload,
              {"serve_time_s": seconds, "serve_wall_s": m.wall_s, "cost_clock": m.clock,
               "peak_bytes": m.peak_bytes,
               "train_rows": [job.start, job.stop], "held_rows": int(feats.shape[0]),
               **fz.describe()}, job.spec())


def reduce_shards(job: ShardedMemberBlock, store: ArtifactStore, args: ComputeArgs) -> None:
    impl, spec = job.method.impl, job.method
    shards = job.shards()
    held_rows = [0]

    def read() -> Iterator[dict[str, torch.Tensor]]:
        for s in shards:  # one at a time: the generator drops each before the next
            tensors, _ = store.get(s.key)
            held_rows[0] = max(held_rows[0], max(int(t.shape[0]) for t in tensors.values()
                                                 if t.dim()))  # not 0-d scales
            yield tensors

    with serving(job, store, args) as (net, mask, m):
        ctx = member_context(net, job.model, job.member, mask, spec, args,
                             **declared_inputs(store, job))
        fz = ctx.featurizer(spec.feature_dim)
        test = fz.features(ctx.data.test, ctx.mask, "test")
        payload, info = impl.finalize_shards(spec, read(), test)
    own = m.seconds + fz.reused_s()
    shard_meta = [store.meta(s.key) for s in shards]
    shard_s = [float(x["serve_time_s"]) for x in shard_meta]
    # The member's serving is all the work that made it (shards and this reduction), in
    # CPU or device seconds, whatever ran in parallel: evaluation charges serve_time_s
    # per member.
    store.put(job.key, payload,
              {"serve_time_s": own + sum(shard_s), "reduce_s": own, "shard_serve_s": shard_s,
               "serve_wall_s": m.wall_s + sum(float(x.get("serve_wall_s", 0.0))
                                              for x in shard_meta), "cost_clock": m.clock,
               "peak_bytes": max([m.peak_bytes, *(x.get("peak_bytes", 0) for x in shard_meta)]),
               "held_rows": held_rows[0],
               "train_shards": [{"rows": [s.start, s.stop], "key": s.key} for s in shards],
               **fz.describe(), **info}, job.spec())


def stored_shards(store: ArtifactStore, key: str) -> list[Shard] | None:
    """The train shards of a stored member payload, in row order, or None when the
    payload holds its train side whole."""
    listed = store.meta(key).get("train_shards")
    if listed is None:
        return None
    return [(int(s["rows"][0]), int(s["rows"][1]), str(s["key"])) for s in listed]
