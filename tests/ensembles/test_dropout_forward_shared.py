"""'dropout-forward-shared': unmasked gradients once per model, D projections, masked Q."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from raytda import Sweep
from raytda.core.args import ComputeArgs
from raytda.core.costs import UnitCosts
from raytda.core.grads import forward_outputs, n_trainable
from raytda.core.outputs import CLASSIFICATION
from raytda.core.projection import GaussianProjector
from raytda.ensembles import Ensemble
from raytda.ensembles.dropout_forward_shared import SharedGradientBlocks
from raytda.features.dense import DenseFeatures
from raytda.methods import Method
from raytda.methods.trak import trak_block, trak_features
from raytda.plan.members import MemberBlock
from raytda.plan.planner import SweepSpec, make_plan
from raytda.plan.seeds import projection_seed
from raytda.specs import LDSSpec, Member
from raytda.tasks import get_task
from raytda.work.serve import load_member, member_mask

FINAL = (None,)
K = 8
TRAK = Method("trak", proj_dim=K, ridge_scale=0.0)  # TRAK's own ridge, as trak_block's None
TASK = get_task("toy-mlp")


def plan_of(*ensembles: Ensemble):
    return make_plan(SweepSpec(tasks=(TASK,), methods=(TRAK,), ensembles=ensembles,
                               lds=LDSSpec(m=5)))


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


# ----------------------------------------------------------------------------- the kind


def test_members_are_masked_q_and_projection_only_features():
    ens = Ensemble("dropout-forward-shared", I=2, D=3)
    assert ens.members(FINAL) == Ensemble("dropout", 2, 3).members(FINAL)
    assert ens.feature_members(FINAL) == Ensemble("projection-only", 2, 3).members(FINAL)
    assert ens.label == "dropout-forward-shared I=2 D=3"


def test_serving_cost_is_one_full_member_plus_d_minus_1_shared_ones():
    u = UnitCosts(train=1.0, serve=10.0, serve_forward_only=4.0)
    ens = Ensemble("dropout-forward-shared", I=3, D=5)
    assert ens.kind_class.serve_time(ens, u) == 3 * 10.0 + 3 * 4 * 4.0
    assert ens.kind_class.train_time(ens, u) == 3.0


# ----------------------------------------------------------------------------- planner


def test_one_shared_job_per_model_and_nothing_shared_it_should_not():
    plan = plan_of(Ensemble("naive", 2), Ensemble("projection-only", 2, 3),
                   Ensemble("dropout", 2, 3), Ensemble("dropout-forward-shared", 2, 3))
    shared = [j for j in plan.jobs if isinstance(j, SharedGradientBlocks)]
    blocks = [j for j in plan.jobs if isinstance(j, MemberBlock)]
    assert len(shared) == 2 and {j.D for j in shared} == {3}
    # Its payloads are stored apart from the per-member blocks of the other kinds.
    assert len(blocks) == 2 * 3 + 2 * 3  # projection-only (incl. naive) + dropout
    assert not {k for j in shared for k in (j.key, *j.parts())} & {j.key for j in blocks}
    # Q: unmasked (naive, projection-only) and the dropout masks, which it shares.
    assert Counter(j.kind for j in plan.jobs)["q"] == 2 + 2 * 3
    ev = next(e for e in plan.evaluations if e.ensemble.kind == "dropout-forward-shared")
    dropout = next(e for e in plan.evaluations if e.ensemble.kind == "dropout")
    assert {q.key for q in ev.qvalues()} == {q.key for q in dropout.qvalues()}
    assert [len(b.parts()) for b in ev.blocks()] == [3, 3]


def test_first_model_is_shared_across_I_but_not_across_D():
    ev = {e.ensemble: e for e in plan_of(Ensemble("dropout-forward-shared", 1, 3),
                                         Ensemble("dropout-forward-shared", 2, 3),
                                         Ensemble("dropout-forward-shared", 1, 4)).evaluations}
    k13, k23, k14 = ([b.key for b in e.blocks()] for e in ev.values())
    assert k13[0] == k23[0] and len(set(k23)) == 2
    assert k14[0] != k13[0]  # D is part of the job: a D=4 job has a fourth payload
    first = [[p.key for p in ev[Ensemble("dropout-forward-shared", 1, d)].blocks()[0].parts()]
             for d in (3, 4)]
    parts3, parts4 = first
    assert len(set(parts3) | set(parts4)) == 7


# ----------------------------------------------------------------------------- compute


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    store = tmp_path_factory.mktemp("shared") / "store"
    sweep = Sweep("toy-mlp", TRAK, ["naive:I=1", "projection-only:I=1,D=3",
                                    "dropout-forward-shared:I=1,D=3",
                                    "dropout-forward-shared:I=1,D=1"],
                  lds=LDSSpec(m=5), store=str(store), progress=False,
                  compute=ComputeArgs(grad_batch=16))
    sweep.run()
    return sweep


def test_scores_equal_projection_only_features_times_masked_q(finished):
    ens = Ensemble("dropout-forward-shared", 1, 3)
    ev = finished.evaluation(ens)
    source = ev.models()[0]
    net = load_member(finished.store, source, Member(0))
    data = TASK.data()
    args = ComputeArgs(grad_batch=16, sparse_inputs=False)  # the plain dense path
    blocks = []
    for d in range(3):
        proj = GaussianProjector(n_trainable(net), K, projection_seed(source, Member(0, None, None, d)))
        blocks.append(trak_block(net, data, proj, None, None, args)[0])
    qs = []
    for mem in ens.members(FINAL):
        masked = load_member(finished.store, source, mem)
        x, y = data.train.tensors()
        qs.append(forward_outputs(masked, x, y, member_mask(masked, source, mem, "fixed"))[1])
    explicit = torch.stack(blocks).mean(0) * torch.stack(qs).mean(0)[None, :]
    assert rel(finished.scores(ens), explicit) < 1e-5


def test_one_mask_payload_equals_the_naive_member(finished):
    shared = finished.evaluation("dropout-forward-shared:I=1,D=1").blocks()[0]
    naive = finished.evaluation("naive:I=1").blocks()[0]
    got, _ = finished.store.get(shared.parts()[0].key)
    ref, _ = finished.store.get(naive.key)
    # float16 features (scaled by a power of two): a float32 difference of ~1e-7 can move
    # an entry across a rounding boundary, one float16 ulp, 2^-10 of the entry at most
    for name in ("train_features", "test_features"):
        assert rel(got[name].double() * got[name.replace("features", "scale")],
                   ref[name].double() * ref[name.replace("features", "scale")]) <= 2.0 ** -10
    assert float(got["ridge"]) == pytest.approx(float(ref["ridge"]), rel=1e-5, abs=0)


def test_payloads_equal_the_projection_only_members(finished):
    shared = finished.evaluation("dropout-forward-shared:I=1,D=3").blocks()[0]
    proj_only = finished.evaluation("projection-only:I=1,D=3").blocks()
    for key, block in zip([p.key for p in shared.parts()], proj_only):
        got, ref = finished.store.get(key)[0], finished.store.get(block.key)[0]
        # one float16 ulp at most (see the test above)
        assert rel(got["train_features"].double() * got["train_scale"],
                   ref["train_features"].double() * ref["train_scale"]) <= 2.0 ** -10


def test_one_gradient_pass_and_the_cost_model_from_the_time_split(finished):
    row = finished.results.set_index("label").loc["dropout-forward-shared I=1 D=3"]
    ev = finished.evaluation("dropout-forward-shared:I=1,D=3")
    meta = finished.store.meta(ev.blocks()[0].key)
    assert meta["passes"] == 1 and len(meta["part_serve_s"]) == 3 and meta["grad_s"] > 0
    assert row["n_members"] == 3 and row["n_q_members"] == 3
    # analytic = I x (shared + member + Q) + I x (D - 1) x (member + Q), with member = its
    # own part + scoring it: the gradient pass counts once, everything else D times.
    q = sum(finished.store.meta(j.key)["serve_time_s"] for j in ev.qvalues()) / 3
    own = sum(meta["part_serve_s"]) / 3
    assert row["analytic_serve_time_s"] >= meta["shared_serve_s"] + 3 * (own + q) - 1e-9
    assert row["analytic_serve_time_s"] < meta["shared_serve_s"] + 3 * (own + q) + 3 * row["serve_time_s"]


def test_cached_gradients_in_several_passes_give_the_same_features(toy_model, toy_data):
    args = ComputeArgs(grad_batch=7)
    dense = DenseFeatures()
    one, info1 = dense.features_for_seeds(toy_model, toy_data, [11, 12], K, args, CLASSIFICATION)
    many, info2 = dense.features_for_seeds(toy_model, toy_data, [11, 12], K, args,
                                           CLASSIFICATION, cache_bytes=1)
    assert info1["passes"] == 1 and info2["passes"] > 2
    for a, b in zip(one, many):
        assert torch.equal(a["train"], b["train"])
    single, _ = trak_features(toy_model, toy_data, GaussianProjector(n_trainable(toy_model), K, 12),
                              None, None, args, pack=False)  # the features as computed
    assert rel(one[1]["test"], single["test_features"]) < 1e-5
