"""Train sides larger than the memory budget: members built in row shards score as the
in-memory path does, through Sweep and through the Attributor, and no job, evaluation
or Attributor call ever holds more than one shard's rows of train features.

Tolerance: on the toy task and on random features of 2000 x 64 and 5000 x 256 (shards of
300 and 700 rows) the sharded scores were measured bit-identical to the whole ones; on
digits-mlp at k=256 in 4 shards (benchmarks/bench_shards.py) they differ by 3e-7 to
1.2e-6 relative (float32 scores of float64 sums taken in another order), as much as the
Attributor's query path differs from the sweep's (tests/test_attributor.py). 1e-5 is
that measured spread with a margin of 8.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch

from raytda import Sweep
from raytda.attributor import Attributor
from raytda.core.args import ComputeArgs
from raytda.ensembles import Ensemble
from raytda.features.base import Featurizer
from raytda.methods import Method
from raytda.methods.trak import TRAK
from raytda.plan.shards import ShardedMemberBlock
from raytda.store import ArtifactStore
from raytda.tasks import get_task

K = 16
METHOD = Method("trak", proj_dim=K)
ENSEMBLES = (Ensemble("naive", 1), Ensemble("dropout", 1, 2),
             Ensemble("dropout", 1, 2, mask_mode="per-sample"))
N_TRAIN = 60  # toy-mlp
# payload_cache_bytes = budget / 2 = 3072 < 60 x 16 x 4 = 3840 bytes of train features:
# sharded, in shards of 3072 / 2 / 64 = 24 rows (24, 24 and a ragged 12). Score chunks of
# 4 test rows (4 x 60 float64), so no n_test x n_train block is held either.
BUDGET = 6144
SHARD_ROWS = 24
CHUNK_BYTES = 4 * N_TRAIN * 8


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


class Held:
    """The largest train-side tensors seen, by where they were held."""

    def __init__(self) -> None:
        self.rows: dict[str, int] = defaultdict(int)
        self.whole_scoring = 0

    def see(self, where: str, t: torch.Tensor) -> None:
        if t.dim() == 2 and t.shape[1] == K:  # features: rows x k
            self.rows[where] = max(self.rows[where], int(t.shape[0]))


@pytest.fixture
def held(monkeypatch) -> Held:
    """Records every train-feature tensor a featurizer makes, every k-column tensor read
    from the store, every score block against a shard, and whole-side scoring calls."""
    h = Held()
    features, get = Featurizer.features, ArtifactStore.get
    score_shard, score_rows = TRAK.score_shard, TRAK.score_rows

    def featurize(self, samples, mask, split, offset=0):
        out = features(self, samples, mask, split, offset)
        if split == "train":
            h.see("featurized", out)
        return out

    def read(self, key):
        tensors, meta = get(self, key)
        for t in tensors.values():
            h.see("read", t)
        return tensors, meta

    def shard_block(self, payload, shard, rows):
        out = score_shard(self, payload, shard, rows)
        h.rows["score_block_cols"] = max(h.rows["score_block_cols"], out.shape[1])
        h.rows["score_block_rows"] = max(h.rows["score_block_rows"], out.shape[0])
        return out

    def whole(self, payload, rows):
        h.whole_scoring += 1
        return score_rows(self, payload, rows)

    monkeypatch.setattr(Featurizer, "features", featurize)
    monkeypatch.setattr(ArtifactStore, "get", read)
    monkeypatch.setattr(TRAK, "score_shard", shard_block)
    monkeypatch.setattr(TRAK, "score_rows", whole)
    return h


@pytest.fixture(scope="module")
def reference(tmp_path_factory, one_torch_thread):
    """The configurations run in memory (default budget), and their scores."""
    store = tmp_path_factory.mktemp("store")
    sweep = Sweep(get_task("toy-mlp"), METHOD, ENSEMBLES, lds=None, store=str(store),
                  progress=False)
    sweep.run()
    return sweep, {e.label: sweep.scores(e) for e in ENSEMBLES}


def sharded_sweep(store) -> Sweep:
    return Sweep(get_task("toy-mlp"), METHOD, ENSEMBLES, lds=None, store=str(store),
                 progress=False,
                 compute=ComputeArgs(memory_budget_bytes=BUDGET, score_chunk_bytes=CHUNK_BYTES))


def test_a_train_side_over_budget_is_sharded_and_scores_as_in_memory(reference, held):
    ref_sweep, ref = reference
    sweep = sharded_sweep(ref_sweep.store.uri)  # same store: models and Q are reused
    plan = sweep.plan()
    assert {j.kind for j in plan.todo} == {"shard", "block", "result"}
    blocks = [j for j in plan.jobs if j.kind == "block"]
    assert blocks and all(isinstance(b, ShardedMemberBlock) for b in blocks)
    # result keys do not change with the budget: it is how, not what
    assert [e.key for e in plan.evaluations] == [e.key for e in ref_sweep.plan().evaluations]
    table = sweep.run()
    for ens in ENSEMBLES:
        assert rel_diff(sweep.scores(ens), ref[ens.label]) < 1e-5

    # No job and no evaluation held train features of more than one shard; scoring went
    # per (test chunk, train shard), never against a whole train side.
    assert held.rows["featurized"] == SHARD_ROWS
    assert held.rows["read"] == SHARD_ROWS  # shards read back by the reduction and scoring
    assert held.rows["score_block_cols"] == SHARD_ROWS
    assert held.whole_scoring == 0
    store = sweep.store
    for ev in plan.evaluations:
        chunks = [c["rows"] for c in store.meta(ev.key)["score_chunks"]]
        assert len(chunks) == 3 and all(b - a == 4 for a, b in chunks)
    assert (table["n_test"] == 12).all()
    # the jobs' own records agree, and the member's serving is the work of all its jobs
    for b in blocks:
        meta = store.meta(b.key)
        assert meta["held_rows"] == SHARD_ROWS
        assert [s["rows"] for s in meta["train_shards"]] == [[0, 24], [24, 48], [48, 60]]
        shard_s = [store.meta(s["key"])["serve_time_s"] for s in meta["train_shards"]]
        assert meta["shard_serve_s"] == shard_s
        assert meta["serve_time_s"] == pytest.approx(meta["reduce_s"] + sum(shard_s))
        assert all(store.meta(s["key"])["held_rows"] <= SHARD_ROWS
                   for s in meta["train_shards"])


def test_the_attributor_scores_from_shards(reference, tmp_path_factory, held):
    ref_sweep, ref = reference
    sweep = sharded_sweep(ref_sweep.store.uri)
    sweep.run()  # cached when the test above ran first
    held.rows.clear()
    x, y = ref_sweep.spec.tasks[0].data().test.tensors()
    for ens in ENSEMBLES:
        attr = Attributor.from_sweep(sweep, ens)
        assert attr.n_train == N_TRAIN
        assert all(m.shards is not None for m in attr.members)
        assert rel_diff(attr.scores(x, y), ref[ens.label]) < 1e-5
        # rows on their own at their place in the test split (per-sample masks follow)
        assert rel_diff(attr.scores(x[5:9], y[5:9], start=5), ref[ens.label][5:9]) < 1e-5
        # what it keeps: the reduced payload and shards within its payload budget
        assert attr.memory()["train_sides"] <= (attr.n_members * K * K * 8
                                                + attr.args.payload_cache_bytes)
    assert held.rows["read"] == SHARD_ROWS
    assert held.whole_scoring == 0


def test_explicit_shard_rows_shard_any_budget(reference, tmp_path):
    """``train_shard_rows`` shards whatever the budget (one row per shard here: 60
    shards); the scores stay those of the whole train side."""
    ref_sweep, ref = reference
    ens = ENSEMBLES[2]  # per-sample masks: each row's mask keyed by its split row
    sweep = Sweep(get_task("toy-mlp"), METHOD, [ens], lds=None, store=str(ref_sweep.store.uri),
                  progress=False, compute=ComputeArgs(train_shard_rows=1))
    blocks = [j for j in sweep.plan().jobs if j.kind == "block"]
    assert all(len(b.shards()) == N_TRAIN for b in blocks)
    sweep.run()
    assert rel_diff(sweep.scores(ens), ref[ens.label]) < 1e-5
