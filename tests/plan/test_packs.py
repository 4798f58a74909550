"""The one grouping rule both executors use for packs (gather_pack): which ready jobs
train with a job, how many, and what a pack skips."""

from __future__ import annotations

from raytda.plan.models import LDSModel, TrainModel
from raytda.plan.packs import gather_pack
from raytda.specs import LDSSpec
from raytda.store import ArtifactStore
from raytda.tasks import get_task


def jobs():
    task = get_task("toy-mlp")
    lds = [LDSModel(task, LDSSpec(m=6), j) for j in range(6)]
    return lds, [TrainModel(task, i) for i in range(2)]


def keys(pack):
    return None if pack is None else [m.key for m in pack.members]


def test_a_pack_is_the_job_and_its_ready_mates_in_order(tmp_path):
    store = ArtifactStore(str(tmp_path))
    lds, models = jobs()
    ready = [models[0], *lds, models[1]]
    assert keys(gather_pack(lds[2], ready, store, None)) == \
        [lds[2].key] + [j.key for j in lds if j is not lds[2]]  # never a member model
    assert keys(gather_pack(models[1], ready, store, None)) == [models[1].key, models[0].key]
    assert keys(gather_pack(lds[0], ready, store, 4)) == [j.key for j in lds[:4]]
    assert gather_pack(lds[0], ready, store, 1) is None  # packing off
    assert gather_pack(lds[0], [lds[0]], store, None) is None  # nothing to train with


def test_spread_splits_one_key_among_actors_rounding_up(tmp_path):
    store = ArtifactStore(str(tmp_path))
    lds, _ = jobs()
    assert len(gather_pack(lds[0], lds, store, None, spread=2).members) == 3
    assert len(gather_pack(lds[0], lds, store, None, spread=4).members) == 2
    assert gather_pack(lds[0], lds, store, None, spread=6) is None  # one each: alone
    assert len(gather_pack(lds[0], lds, store, 2, spread=2).members) == 2  # limit first


def test_stored_jobs_are_left_out(tmp_path):
    store = ArtifactStore(str(tmp_path))
    lds, _ = jobs()
    store.put(lds[1].key, {}, {}, lds[1].spec())
    assert lds[1].key not in keys(gather_pack(lds[0], lds, store, None))
    assert gather_pack(lds[1], lds, store, None) is None  # stored itself: no pack
