"""The planner shares every artifact between configurations and skips what is cached."""

from __future__ import annotations

from collections import Counter

import pytest

from raytda.ensembles import Ensemble
from raytda.methods import Method
from raytda.plan.planner import SweepSpec, make_plan
from raytda.specs import LDSSpec, SpecError
from raytda.tasks import get_task

SETTING = get_task("toy-mlp")
TRAK8 = (Method("trak", proj_dim=8),)
LDS5 = LDSSpec(m=5)


def spec(*ensembles: Ensemble, methods=TRAK8, lds=LDS5):
    return SweepSpec(tasks=(SETTING,), methods=methods, ensembles=ensembles, lds=lds)


def kinds(plan) -> Counter:
    return Counter(j.kind for j in plan.jobs)


def test_first_models_of_a_larger_ensemble_are_reused():
    plan = make_plan(spec(Ensemble("naive", 5), Ensemble("naive", 25)))
    assert kinds(plan)["model"] == 25  # not 30


def test_smaller_D_reuses_the_first_masks():
    plan = make_plan(spec(Ensemble("dropout", 2, 10), Ensemble("dropout", 2, 25)))
    c = kinds(plan)
    assert c["block"] == 2 * 25 and c["q"] == 2 * 25 and c["model"] == 2


def test_lds_models_are_trained_once_per_setting():
    plan = make_plan(spec(Ensemble("naive", 1), Ensemble("dropout", 3, 4),
                          methods=(Method("trak", proj_dim=8), Method("grad-dot")),
                          lds=LDSSpec(m=7, models_per_subset=2)))
    assert kinds(plan)["ldsmodel"] == 14


def test_forward_only_shares_unmasked_features_with_naive():
    plan = make_plan(spec(Ensemble("naive", 3), Ensemble("dropout-forward", 3, 4)))
    c = kinds(plan)
    assert c["block"] == 3  # the naive blocks serve as forward-only features
    assert c["q"] == 3 + 3 * 4  # unmasked Q for naive, masked Q for forward-only


def test_projection_only_member_zero_is_the_naive_member():
    plan = make_plan(spec(Ensemble("naive", 2), Ensemble("projection-only", 2, 3)))
    assert kinds(plan)["block"] == 2 * 3


def test_methods_other_than_trak_ignore_projection_seeds():
    ev = spec(Ensemble("dropout", 1, 3), methods=(Method("grad-cos"),)).evaluations()[0]
    assert len({b.key for b in ev.blocks()}) == 3
    assert all(b.member.projection == 0 for b in ev.blocks())


def test_dependencies_come_first_and_jobs_are_unique():
    plan = make_plan(spec(Ensemble("naive", 2), Ensemble("dropout", 2, 2)))
    pos = {j.key: i for i, j in enumerate(plan.jobs)}
    assert len(pos) == len(plan.jobs)
    for job in plan.jobs:
        assert all(pos[d.key] < pos[job.key] for d in job.deps())


def test_keys_depend_on_what_determines_the_artifact():
    a = spec(Ensemble("naive", 1)).evaluations()[0]
    b = spec(Ensemble("naive", 1), lds=LDSSpec(m=5, seed=1)).evaluations()[0]
    c = spec(Ensemble("naive", 1), methods=(Method("trak", proj_dim=16),)).evaluations()[0]
    assert a.key != b.key and a.key != c.key
    assert a.models()[0].key == b.models()[0].key == c.models()[0].key
    assert a.blocks()[0].key != c.blocks()[0].key


def test_trak_only_kinds_are_rejected_for_other_methods():
    with pytest.raises(SpecError, match="needs TRAK's Q weighting, which method 'grad-dot'"):
        spec(Ensemble("dropout-forward", 1, 2), methods=(Method("grad-dot"),))


def test_empty_grid_is_rejected():
    with pytest.raises(SpecError, match="empty"):
        SweepSpec(tasks=(SETTING,), ensembles=())


def test_sweep_spec_checks_every_triple_before_planning():
    with pytest.raises(SpecError, match="lds must be an LDSSpec, a GroundTruth or None"):
        SweepSpec(tasks=(SETTING,), lds=5)
    # Attribution only: no LDS models at all.
    plan = make_plan(spec(Ensemble("naive", 2), lds=None))
    assert kinds(plan)["ldsmodel"] == 0 and kinds(plan)["result"] == 1


def test_building_a_sweep_spec_reads_no_data():
    """Constructing the spec (and a Task) reads no file and loads no torch; the data is read
    once, when the first key is needed, since the keys hold the data's fingerprints."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from raytda.ensembles import Ensemble\n"
            "from raytda.plan.planner import SweepSpec\n"
            "from raytda.tasks import get_task\n"
            "spec = SweepSpec(tasks=(get_task('digits-mlp'),), ensembles=(Ensemble('dropout', 2, 3),))\n"
            "assert spec.tasks[0].known_data_identity() is None\n"
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)\n")
    subprocess.run([sys.executable, "-c", code], check=True)
