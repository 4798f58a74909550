"""Planning sharded train sides: when a member is sharded, its shards cover the train rows
once, and nothing about sharding enters a result's key."""

from __future__ import annotations

import pytest

from raytda.core.args import ComputeArgs
from raytda.ensembles import Ensemble
from raytda.methods import Method
from raytda.plan.members import MemberBlock
from raytda.plan.planner import SweepSpec, make_plan
from raytda.plan.shards import ShardedMemberBlock, ShardRule, TrainShard
from raytda.specs import SpecError
from raytda.tasks import get_task

TASK = get_task("toy-mlp")  # 60 train rows
TRAK16 = Method("trak", proj_dim=16)  # 60 x 16 x 4 = 3840 bytes of train features


def spec(*ensembles: Ensemble, methods=(TRAK16,)) -> SweepSpec:
    return SweepSpec(tasks=(TASK,), methods=methods, ensembles=ensembles, lds=None)


def test_the_rule_shards_only_what_exceeds_the_share():
    rule = ShardRule(member_bytes=3840)
    assert rule.shard_rows(60, 16) is None  # fits exactly
    assert rule.shard_rows(61, 16) == 30  # half the share per shard
    assert ShardRule(member_bytes=10).shard_rows(60, 16) == 1  # never zero rows
    assert ShardRule(member_bytes=1 << 40, rows=7).shard_rows(60, 16) == 7  # explicit wins
    assert ShardRule(member_bytes=1, rows=60).shard_rows(60, 16) is None  # one shard: whole
    assert ShardRule.of(ComputeArgs(memory_budget_bytes=6144)) == ShardRule(3072)


def test_shard_rows_must_be_positive():
    with pytest.raises(SpecError, match="train_shard_rows"):
        ComputeArgs(train_shard_rows=0)


@pytest.mark.parametrize("rows", [1, 7, 24, 59])
def test_shards_cover_the_train_rows_once(rows):
    plan = make_plan(spec(Ensemble("dropout", 1, 2)), compute=ComputeArgs(train_shard_rows=rows))
    blocks = [j for j in plan.jobs if j.kind == "block"]
    assert len(blocks) == 2 and all(isinstance(b, ShardedMemberBlock) for b in blocks)
    for b in blocks:
        shards = b.shards()
        assert shards[0].start == 0 and shards[-1].stop == 60
        assert all(s.stop - s.start <= rows for s in shards)
        assert all(a.stop == c.start for a, c in zip(shards, shards[1:]))
        # each shard is a job of the plan, run before the reduction that reads it
        order = [j.key for j in plan.jobs]
        assert all(order.index(s.key) < order.index(b.key) for s in shards)
        # shards of one member depend on its model only, not on each other
        assert all(not any(isinstance(d, TrainShard) for d in s.deps()) for s in shards)
    assert len({s.key for b in blocks for s in b.shards()}) == 2 * len(blocks[0].shards())


def test_sharding_changes_no_result_key_and_keeps_models_and_q():
    whole = make_plan(spec(Ensemble("naive", 1), Ensemble("dropout", 1, 2)))
    sharded = make_plan(spec(Ensemble("naive", 1), Ensemble("dropout", 1, 2)),
                        compute=ComputeArgs(memory_budget_bytes=6144))
    assert [e.key for e in whole.evaluations] == [e.key for e in sharded.evaluations]
    for kind in ("model", "q"):
        assert ({j.key for j in whole.jobs if j.kind == kind}
                == {j.key for j in sharded.jobs if j.kind == kind})
    assert all(type(j) is MemberBlock for j in whole.jobs if j.kind == "block")
    assert sharded.counts()["shard"] == (3 * 3, 3 * 3)  # 3 members x 3 shards of 24 rows
    # the default budget (8 GiB) builds toy members whole, whoever plans them
    assert {j.key for j in make_plan(spec(Ensemble("naive", 1)), compute=ComputeArgs()).jobs} \
        == {j.key for j in make_plan(spec(Ensemble("naive", 1))).jobs}


def test_methods_and_kinds_that_cannot_shard_keep_their_jobs():
    tiny = ComputeArgs(memory_budget_bytes=64)
    plan = make_plan(spec(Ensemble("naive", 1), methods=(Method("grad-dot", proj_dim=16),)),
                     compute=tiny)
    assert plan.counts().get("shard") is None  # Grad-Dot's payload is its n_test x n_train block
    plan = make_plan(spec(Ensemble("dropout-forward-shared", 1, 2)), compute=tiny)
    assert plan.counts().get("shard") is None  # a kind with its own feature job
