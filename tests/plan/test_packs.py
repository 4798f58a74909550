"""The one grouping rule both executors use for packs (gather_pack): which ready jobs
train with a job, how many, and what a pack skips."""

from __future__ import annotations

from raytda.plan.models import LDSModel, TrainModel
from raytda.plan.packs import SMALLEST_AUTO_PACK, gather_pack
from raytda.specs import LDSSpec
from raytda.store import ArtifactStore
from raytda.tasks import get_task


def jobs(m: int = 6):
    task = get_task("toy-mlp")
    lds = [LDSModel(task, LDSSpec(m=m), j) for j in range(m)]
    return lds, [TrainModel(task, i) for i in range(2)]


def keys(pack):
    return None if pack is None else [m.key for m in pack.members]


def test_a_pack_is_the_job_and_its_ready_mates_in_order(tmp_path):
    store = ArtifactStore(str(tmp_path))
    lds, models = jobs()
    ready = [models[0], *lds, models[1]]
    assert keys(gather_pack(lds[2], ready, store, None)) == \
        [lds[2].key] + [j.key for j in lds if j is not lds[2]]  # never a member model
    # two members: a pack when asked for (limit 2), alone under "auto" (a stacked step's
    # fixed cost needs SMALLEST_AUTO_PACK models to pay for itself)
    assert keys(gather_pack(models[1], ready, store, 2)) == [models[1].key, models[0].key]
    assert gather_pack(models[1], ready, store, None) is None
    assert keys(gather_pack(lds[0], ready, store, 4)) == [j.key for j in lds[:4]]
    assert gather_pack(lds[0], ready, store, 1) is None  # packing off
    assert gather_pack(lds[0], [lds[0]], store, None) is None  # nothing to train with


def test_spread_splits_one_key_among_actors_rounding_up(tmp_path):
    store = ArtifactStore(str(tmp_path))
    lds, _ = jobs(6)
    assert len(gather_pack(lds[0], lds, store, 6, spread=2).members) == 3
    assert len(gather_pack(lds[0], lds, store, 6, spread=4).members) == 2
    assert gather_pack(lds[0], lds, store, 6, spread=6) is None  # one each: alone
    assert len(gather_pack(lds[0], lds, store, 2, spread=2).members) == 2  # limit first
    lds, _ = jobs(3 * SMALLEST_AUTO_PACK)
    assert len(gather_pack(lds[0], lds, store, None, spread=3).members) == SMALLEST_AUTO_PACK
    assert gather_pack(lds[0], lds, store, None, spread=4) is None  # 3 each: alone


def test_stored_jobs_are_left_out(tmp_path):
    store = ArtifactStore(str(tmp_path))
    lds, _ = jobs()
    store.put(lds[1].key, {}, {}, lds[1].spec())
    assert lds[1].key not in keys(gather_pack(lds[0], lds, store, None))
    assert gather_pack(lds[1], lds, store, None) is None  # stored itself: no pack
