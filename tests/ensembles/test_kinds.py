"""Ensemble kinds: their members, fields, labels and what they need of a method."""

from __future__ import annotations

import pytest

from raytda.ensembles import ENSEMBLES, Ensemble, EnsembleKind, register_ensemble
from raytda.methods import Method
from raytda.plan.planner import check_combination
from raytda.specs import Member, SpecError
from raytda.tasks import get_task

FINAL = (None,)  # a run that keeps its final weights only
EPOCHS = (5, 10, 15, None)  # kept checkpoints, oldest first; None = final weights




def test_dropout_members_have_distinct_masks_and_projections():
    ms = Ensemble(kind="dropout", I=2, D=3).members(FINAL)
    assert len(ms) == 6 and len(set(ms)) == 6
    assert [(m.model, m.mask, m.projection) for m in ms[:3]] == [(0, 0, 0), (0, 1, 1), (0, 2, 2)]


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
