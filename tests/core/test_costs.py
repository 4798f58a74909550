"""Cost measurement and the analytic cost model of appendix E."""

from __future__ import annotations

import mmap
import time

import pytest

from raytda.core.costs import (
    UnitCosts,
    analytic_params,
    analytic_serve_time,
    analytic_train_time,
    measure,
)

U = UnitCosts(train=100.0, serve=7.0, serve_forward_only=2.0)


@pytest.mark.parametrize("kind", ["naive", "dropout", "dropout-forward", "projection-only",
                                  "checkpoints", "checkpoints-dropout"])
def test_training_time_is_I_trainings(kind):
    """Masks, projections and checkpoints are free at training time: I x T_train."""
    assert analytic_train_time(kind, 5, U, C=3) == 500.0


def test_serving_time_formulas():
    assert analytic_serve_time("naive", 4, 1, U) == 4 * 7.0
    assert analytic_serve_time("dropout", 4, 10, U) == 4 * 10 * 7.0
    # Forward-only: one full serving per model, the other D - 1 masks forward passes only.
    assert analytic_serve_time("dropout-forward", 4, 10, U) == 4 * 7.0 + 4 * 9 * 2.0
    assert analytic_serve_time("checkpoints", 4, 1, U, C=3) == 4 * 3 * 7.0
    assert analytic_serve_time("checkpoints-dropout", 4, 2, U, C=3) == 4 * 3 * 2 * 7.0


def test_projection_only_costs_at_most_dropout():
    """Not in appendix E: D projections of one unmasked model. With D = 1 it is naive, and
    it never costs more than D masked members (at most the Q passes can be shared)."""
    assert analytic_serve_time("projection-only", 4, 1, U) == analytic_serve_time("naive", 4, 1, U)
    assert analytic_serve_time("projection-only", 4, 10, U) <= 4 * 10 * 7.0
    no_fwd = UnitCosts(train=1.0, serve=7.0)
    assert analytic_serve_time("projection-only", 4, 10, no_fwd) == 4 * 10 * 7.0


def test_forward_only_with_one_mask_costs_the_same_as_naive():
    assert analytic_serve_time("dropout-forward", 3, 1, U) == analytic_serve_time("naive", 3, 1, U)


def test_paper_headline_ratio():
    """Dropout I=5 vs naive I=25: 80% less training (the paper's headline)."""
    saved = 1 - analytic_train_time("dropout", 5, U) / analytic_train_time("naive", 25, U)
    assert saved == pytest.approx(0.8)


def test_unknown_kind_is_an_error():
    with pytest.raises(ValueError, match="no cost model for ensemble kind 'bagging'"):
        analytic_serve_time("bagging", 1, 1, U)


def test_stored_parameters_grow_with_I_only():
    assert analytic_params(5, 110_000) == 550_000


def test_measure_records_wall_time_and_memory():
    size = 40 * 2**20
    with measure() as m:
        time.sleep(0.05)
        # A fresh anonymous mapping, written page by page: new resident memory whatever the
        # allocator holds from earlier tests.
        block = mmap.mmap(-1, size)
        for offset in range(0, size, mmap.PAGESIZE):
            block[offset] = 1
        time.sleep(0.05)
    assert 0.09 < m.seconds < 5.0
    assert m.peak_bytes > size // 2
    block.close()
