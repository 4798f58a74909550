"""A projection drawn again (``draw``): the default stays out of every key, another draw
scores the same models through an independent projection, the same in every path."""

from __future__ import annotations

import pytest
import torch

from raytda import Sweep
from raytda.core.args import ComputeArgs
from raytda.features import features_from
from raytda.methods import Method
from raytda.specs import SpecError


def test_the_default_draw_leaves_spellings_and_keys_as_they_were():
    assert features_from("dense").hashed() == {"name": "dense"}
    assert features_from("dense:draw=0") == features_from("dense")
    assert Method("trak", features="factorized").features == "factorized:uncovered=dense"
    assert Method("trak", features="sketch").features == "sketch:uncovered=dense"
    assert "features" not in Method("trak", proj_dim=8, ridge_scale=0.0, features="dense:draw=0").hashed()
    assert Method("trak", proj_dim=8, ridge_scale=0.0,
                  features="dense:draw=1").hashed()["features"] == {
        "name": "dense", "draw": 1}
    for bad in ("dense:draw=-1", "sketch:draw=0.5"):
        with pytest.raises(SpecError, match="draw must be an integer >= 0"):
            features_from(bad)


def test_each_draw_is_its_own_seed_and_the_same_for_every_part():
    seeds = [features_from(f"dense:draw={d}").projection_seed(123) for d in range(3)]
    assert seeds[0] == 123 and len(set(seeds)) == 3
    # a member's draw d is one projection, whichever part projects with it
    assert features_from("sketch:draw=2").projection_seed(123) == seeds[2]


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory, one_torch_thread):
    store = str(tmp_path_factory.mktemp("redraw"))
    ens = ["naive:I=1", "dropout-forward-shared:I=1,D=2", "projection-only:I=1,D=2"]
    args = ComputeArgs(grad_batch=16, sparse_inputs=False)

    def run(features: str) -> Sweep:
        s = Sweep("toy-mlp", Method("trak", proj_dim=8, ridge_scale=0.0, features=features),
                  ens, lds=None, store=store, progress=False, compute=args)
        s.run()
        return s

    return {f: run(f) for f in ("dense", "dense:draw=1", "sketch", "sketch:draw=1")}


@pytest.mark.parametrize("part", ["dense", "sketch"])
def test_another_draw_scores_the_same_models_differently(sweeps, part):
    first, second = sweeps[part], sweeps[f"{part}:draw=1"]
    ev0, ev1 = first.evaluation("naive:I=1"), second.evaluation("naive:I=1")
    assert ev0.models()[0].key == ev1.models()[0].key  # nothing retrained
    assert ev0.blocks()[0].key != ev1.blocks()[0].key
    a, b = first.scores("naive:I=1"), second.scores("naive:I=1")
    # two independent k = 8 projections of one gradient: far apart, yet both track it
    assert not torch.allclose(a, b, rtol=0.1, atol=0)
    assert torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1] > 0


def test_the_shared_gradient_path_draws_what_members_draw(sweeps):
    """'dropout-forward-shared' projects one gradient pass D times (its own code path);
    with a draw, its features must still be those of the projection-only members."""
    sweep = sweeps["dense:draw=1"]
    shared = sweep.evaluation("dropout-forward-shared:I=1,D=2").blocks()[0]
    proj_only = sweep.evaluation("projection-only:I=1,D=2").blocks()
    for key, block in zip([p.key for p in shared.parts()], proj_only):
        got, ref = sweep.store.get(key)[0], sweep.store.get(block.key)[0]
        g = got["train_features"].double() * got["train_scale"]
        r = ref["train_features"].double() * ref["train_scale"]
        # float16 features: one ulp (2^-10 of the largest entry) at most, as in
        # tests/ensembles/test_dropout_forward_shared.py
        assert float((g - r).abs().max() / r.abs().max()) <= 2.0 ** -10
    undrawn = sweeps["dense"].evaluation("projection-only:I=1,D=2").blocks()[0]
    a = sweeps["dense"].store.get(undrawn.key)[0]["train_features"]
    b = sweep.store.get(proj_only[0].key)[0]["train_features"]
    assert not torch.equal(a, b)


def test_a_draw_on_exact_gradients_is_refused_before_anything_runs(tmp_path):
    """Grad-Dot on dense features compares exact gradients: a draw would change no number,
    only the keys, so the sweep refuses it up front and writes nothing."""
    with pytest.raises(SpecError, match="no projection draw changes"):
        Sweep("toy-mlp", Method("grad-dot", features="dense:draw=1"), ["naive:I=1"],
              lds=None, store=str(tmp_path / "st"), progress=False).run()
    assert not (tmp_path / "st").exists() or not any(p.is_file() for p in (tmp_path / "st").rglob("*"))
    for projected in (Method("trak", proj_dim=8, features="dense:draw=1"),
                      Method("grad-dot", proj_dim=8, features="sketch:draw=1")):
        projected.impl.check(projected, None)  # a projection to draw: accepted
