"""The analytic cost model of appendix E, as each ensemble kind declares it."""

from __future__ import annotations

import pytest

from raytda.core.costs import MeasuredUnits, UnitCosts
from raytda.ensembles import ENSEMBLES, Ensemble

U = UnitCosts(train=100.0, serve=7.0, serve_forward_only=2.0, train_lora=10.0)


def serve(kind: str, **kw) -> float:
    e = Ensemble(kind, **kw)
    return e.kind_class.serve_time(e, U)


def train(kind: str, **kw) -> float:
    e = Ensemble(kind, **kw)
    return e.kind_class.train_time(e, U)


@pytest.mark.parametrize("kind,kw", [("naive", {}), ("dropout", {"D": 3}),
                                     ("dropout-forward", {"D": 3}), ("projection-only", {"D": 3}),
                                     ("checkpoints", {"C": 3}),
                                     ("checkpoints-dropout", {"C": 3, "D": 2})])
def test_training_time_is_I_trainings(kind, kw):
    """Masks, projections and checkpoints are free at training time: I x T_train."""
    assert train(kind, I=5, **kw) == 500.0


def test_lora_training_time_is_bases_plus_adapters():
    assert train("lora", I=2, L=3) == 2 * 100.0 + 2 * 3 * 10.0


def test_serving_time_formulas():
    assert serve("naive", I=4) == 4 * 7.0
    assert serve("dropout", I=4, D=10) == 4 * 10 * 7.0
    # Forward-only: one full serving per model, the other D - 1 masks forward passes only.
    assert serve("dropout-forward", I=4, D=10) == 4 * 7.0 + 4 * 9 * 2.0
    assert serve("checkpoints", I=4, C=3) == 4 * 3 * 7.0
    assert serve("checkpoints-dropout", I=4, D=2, C=3) == 4 * 3 * 2 * 7.0
    assert serve("lora", I=2, L=3) == 2 * 3 * 7.0


def test_projection_only_costs_at_most_dropout():
    """Not in appendix E: D projections of one unmasked model. With D = 1 it is naive, and
    it never costs more than D masked members (at most the Q passes can be shared)."""
    assert serve("projection-only", I=4, D=1) == serve("naive", I=4)
    assert serve("projection-only", I=4, D=10) <= 4 * 10 * 7.0


def test_forward_only_with_one_mask_costs_the_same_as_naive():
    assert serve("dropout-forward", I=3, D=1) == serve("naive", I=3)


def test_paper_headline_ratio():
    """Dropout I=5 vs naive I=25: 80% less training (the paper's headline)."""
    assert 1 - train("dropout", I=5, D=10) / train("naive", I=25) == pytest.approx(0.8)


def test_stored_parameters():
    """Masks and projections are free to store; checkpoints and adapters are not."""
    def params(kind, **kw):
        e = Ensemble(kind, **kw)
        return e.kind_class.stored_params(e, 1000, 50)

    assert params("naive", I=5) == params("dropout", I=5, D=10) == 5000
    assert params("projection-only", I=2, D=4) == params("dropout-forward", I=2, D=4) == 2000
    assert params("checkpoints", I=2, C=3) == params("checkpoints-dropout", I=2, C=3, D=2) == 6000
    assert params("lora", I=1, L=3) == 1000 + 3 * 50


M = MeasuredUnits(train=100.0, member=3.0, q=2.0, shared=5.0, train_lora=10.0)


def test_a_kinds_units_are_its_own_rule_from_the_measured_parts():
    # T_Serving: one member from scratch; T_Serving,Forward-only: one more mask, which is
    # a forward-only Q pass for every kind...
    for kind in ("naive", "dropout", "dropout-forward", "projection-only", "lora"):
        u = ENSEMBLES[kind].unit_costs(M)
        assert u == UnitCosts(train=100.0, serve=10.0, serve_forward_only=2.0, train_lora=10.0)
    # ...but dropout-forward-shared's, whose extra mask is a member on shared gradients
    # (its projection, solve and scoring) plus its Q pass
    u = ENSEMBLES["dropout-forward-shared"].unit_costs(M)
    assert (u.serve, u.serve_forward_only) == (10.0, 5.0)
