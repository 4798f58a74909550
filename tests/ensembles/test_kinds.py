"""Ensemble kinds: their members, fields, labels and what they need of a method."""

from __future__ import annotations

import itertools

import pytest
import torch

from raytda.core.grads import per_sample_grads
from raytda.core.masks import fixed_masks
from raytda.ensembles import ENSEMBLES, Ensemble, EnsembleKind, register_ensemble
from raytda.methods import Method
from raytda.plan.models import TrainModel
from raytda.plan.planner import check_combination
from raytda.plan.seeds import projection_seed
from raytda.specs import Member, SpecError
from raytda.tasks import get_task
from raytda.work.serve import member_mask

FINAL = (None,)  # a run that keeps its final weights only
EPOCHS = (5, 10, 15, None)  # kept checkpoints, oldest first; None = final weights




def test_dropout_members_have_distinct_masks_and_projections(toy_model, toy_data):
    """Served as the serving jobs serve them, the I x D members drop different units,
    project with different P and so give different features."""
    task = get_task("toy-mlp")
    ms = Ensemble(kind="dropout", I=2, D=3).members(FINAL)
    assert len(ms) == 6
    sources = [TrainModel(task, m.model) for m in ms]
    masks = [fixed_masks(member_mask(toy_model, src, m, "fixed"), toy_model.mask_sizes)
             for src, m in zip(sources, ms)]
    flat = [torch.cat([t.reshape(-1) for t in mk]) for mk in masks]
    assert all(0 < float(f.mean()) < 1 for f in flat)  # each drops some units, not all
    for a, b in itertools.combinations(range(len(ms)), 2):
        assert not torch.equal(flat[a], flat[b]), (ms[a], ms[b])
    assert len({projection_seed(src, m) for src, m in zip(sources, ms)}) == len(ms)
    # the gradients the members project differ too: masks reach the network
    x, y = toy_data.x_train[:4], toy_data.y_train[:4]
    grads = [next(per_sample_grads(toy_model, x, y, member_mask(toy_model, src, m, "fixed")))[1]
             for src, m in zip(sources, ms)]
    for a, b in itertools.combinations(range(len(ms)), 2):
        assert not torch.allclose(grads[a], grads[b]), (ms[a], ms[b])


def test_naive_and_projection_only_members():
    naive = Ensemble(kind="naive", I=3).members(FINAL)
    assert naive == tuple(Member(i) for i in range(3))
    proj = Ensemble(kind="projection-only", I=1, D=4).members(FINAL)
    assert all(m.mask is None for m in proj)
    assert [m.projection for m in proj] == [0, 1, 2, 3]


def test_checkpoint_members_use_last_saved_epochs():
    ms = Ensemble(kind="checkpoints", I=1, C=3).members(EPOCHS)
    assert [m.checkpoint for m in ms] == [10, 15, None]  # None = final weights
    with pytest.raises(SpecError, match="C=5 checkpoints requested but each training run keeps 4"):
        Ensemble(kind="checkpoints", C=5).members(EPOCHS)


def test_dropout_forward_features_are_unmasked_base_models():
    ens = Ensemble(kind="dropout-forward", I=2, D=3)
    q_members = ens.members(FINAL)
    assert len(q_members) == 6 and all(m.mask is not None for m in q_members)
    assert ens.feature_members(FINAL) == (Member(0), Member(1))



@pytest.mark.parametrize("kind", ["dropout-forward", "projection-only"])
@pytest.mark.parametrize("method", ["grad-cos", "if"])
def test_trak_only_kinds_are_refused_by_capability(kind, method):
    with pytest.raises(SpecError, match=f"ensemble kind '{kind}' needs"):
        check_combination(get_task("toy-mlp"), Method(method), Ensemble(kind, 1, 2), None)


def test_a_kind_registered_from_user_code_is_a_first_class_kind():
    @register_ensemble
    class EveryOther(EnsembleKind):
        """Test kind: models 0, 2, 4, ... of 2I trained models."""

        name = "every-other"

        def members(self, ens, epochs):
            return tuple(Member(2 * i) for i in range(ens.I))

        def serve_time(self, ens, u):
            return ens.I * u.serve

    try:
        ens = Ensemble("every-other", I=2)
        assert ens.label == "every-other I=2"
        assert ens.members(FINAL) == (Member(0), Member(2))
        with pytest.raises(SpecError, match="takes no D"):
            Ensemble("every-other", I=2, D=3)
    finally:
        ENSEMBLES.pop("every-other")
