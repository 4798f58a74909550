"""TRAK's Q read off the factorized member's own hooked pass (issue 28): no QValues job is
planned where a member's Q is its feature member's, the values equal what the QValues job
computes, and a configuration's LDS is the same from either."""

from __future__ import annotations

import pytest
import torch

from raytda import Sweep
from raytda.core.args import ComputeArgs
from raytda.methods import Method
from raytda.plan.members import PassQ, QValues
from raytda.specs import LDSSpec
from raytda.work.evaluate import evaluate

FACTORIZED = Method("trak", proj_dim=16, features="factorized")
# Q from the feature pass: every Q member is a feature member (projection-only: the
# first projection's pass gives the model's one Q)
SAME = ["naive:I=2", "dropout:I=1,D=2", "dropout:I=1,D=2,mask_mode=per-sample",
        "projection-only:I=1,D=2"]
# Q of masked variants, features of the unmasked model: Q jobs stay
OTHER = ["dropout-forward:I=1,D=2", "dropout-forward-shared:I=1,D=2"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, one_torch_thread):
    # grad_batch 7 against forward_batch 2048: Q comes from other batches than the
    # QValues job's, so per-row masks and batch-size rounding are both exercised
    compute = ComputeArgs(grad_batch=7)
    sweep = Sweep("toy-mlp", FACTORIZED, SAME + ["dropout-forward:I=1,D=2"],
                  lds=LDSSpec(m=5), store=str(tmp_path_factory.mktemp("st")),
                  compute=compute, progress=False)
    sweep.run()
    return sweep


@pytest.mark.parametrize("ens", SAME)
def test_no_q_job_where_q_comes_from_the_features(ens, tmp_path):
    sweep = Sweep("toy-mlp", FACTORIZED, [ens], lds=None, store=str(tmp_path), progress=False)
    ev = sweep.evaluation(ens)
    assert ev.qvalues() == ()
    assert ev.needs.q and all(isinstance(q, PassQ) for q in ev.needs.q)
    plan = sweep.plan()
    assert "q" not in plan.counts()
    # the cost line counts the jobs that run: no Q pass
    from raytda.plan.estimate import estimate

    assert "q" not in estimate(plan, sweep.store).jobs
    # one Q per distinct Q member, as the QValues jobs were
    assert len({q.replaces.key for q in ev.needs.q}) == len(ev.needs.q)


@pytest.mark.parametrize("ens", OTHER)
def test_q_jobs_stay_where_q_members_differ_from_feature_members(ens, tmp_path):
    sweep = Sweep("toy-mlp", FACTORIZED, [ens], lds=None, store=str(tmp_path), progress=False)
    ev = sweep.evaluation(ens)
    assert len(ev.qvalues()) == 2 and all(isinstance(q, QValues) for q in ev.needs.q)
    assert all(q.member.mask is not None for q in ev.qvalues())


def test_dense_features_keep_their_q_jobs(tmp_path):
    sweep = Sweep("toy-mlp", Method("trak", proj_dim=16), ["naive:I=2"], lds=None,
                  store=str(tmp_path), progress=False)
    assert len(sweep.evaluation("naive:I=2").qvalues()) == 2


@pytest.mark.parametrize("ens", ["naive:I=2", "dropout:I=1,D=2",
                                 "dropout:I=1,D=2,mask_mode=per-sample"])
def test_q_and_lds_equal_the_q_jobs(finished, ens):
    store, args = finished.store, finished.compute
    ev = finished.evaluation(ens)
    before = store.meta(ev.key)
    for q in ev.needs.q:
        q.replaces.run(store, args)  # the old path: a plain forward over the train rows
        new, old = store.get(q.key)[0]["q"], store.get(q.replaces.key)[0]["q"]
        assert new.shape == old.shape == (60,)
        # measured: at most 3.0e-8 apart over these 3 kinds' 6 members (Q in [0, 1];
        # float32 logits of batches of 7 against one batch of 60)
        torch.testing.assert_close(new, old, rtol=1e-5, atol=1e-6)
    # the evaluation again, reading Q from the QValues artifacts (as in a store made
    # before feature jobs stored Q): the same LDS (measured: exactly equal, all 3 kinds)
    for q in ev.needs.q:
        store.delete(q.key)
    assert all(q.stored_key(store) == q.replaces.key for q in ev.needs.q)
    evaluate(ev, store, args)
    after = store.meta(ev.key)
    assert after["lds"] == pytest.approx(before["lds"], abs=1e-9)
    assert after["n_q_members"] == before["n_q_members"] == len(ev.needs.q)


def test_the_member_serving_holds_its_q(finished):
    ev = finished.evaluation("naive:I=2")
    for q in ev.needs.q:
        meta = finished.store.meta(q.stored_key(finished.store))
        assert meta.get("from_features") == q.block.key or q.stored_key(
            finished.store) == q.replaces.key
    row = finished.results.set_index("label").loc["naive I=2"]
    assert row["n_q_members"] == 2
    # no Q pass of its own: serving is the members' blocks and the evaluation
    blocks = sum(finished.store.meta(b.key)["serve_time_s"] for b in ev.blocks())
    assert row["serve_time_s"] >= blocks


def test_dropout_forward_q_is_its_masked_passes(finished):
    ev = finished.evaluation("dropout-forward:I=1,D=2")
    assert all(finished.store.has(q.key) for q in ev.qvalues())
    assert all(finished.store.meta(q.key)["serve_time_s"] > 0 for q in ev.qvalues())
