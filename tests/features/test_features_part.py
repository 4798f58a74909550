"""The gradient-features part: specs that parse and enter keys, a dense featurizer that
gives exact or projected gradients, and a part registered from outside raytda."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from raytda.core.args import ComputeArgs
from raytda.core.grads import per_sample_grads
from raytda.core.outputs import CLASSIFICATION
from raytda.core.projection import GaussianProjector
from raytda.features import (
    FEATURES,
    Featurizer,
    GradientFeatures,
    features_from,
    register_features,
)
from raytda.features.dense import DenseFeaturizer
from raytda.methods import Method
from raytda.specs import SpecError

ARGS = ComputeArgs(grad_batch=7)


def test_specs_parse_to_one_spelling():
    assert features_from("dense").spec_string() == "dense"
    f = features_from("factorized:uncovered=skip")
    assert f == features_from({"name": "factorized", "uncovered": "skip"})
    assert Method("trak", features="factorized").features == "factorized:uncovered=dense"
    for bad, why in [("nope", "unknown gradient features"), ("factorized:k=3", "take no"),
                     ("factorized:uncovered", "key=value"),
                     ("factorized:uncovered=maybe", "'dense' or 'skip'")]:
        with pytest.raises(SpecError, match=why):
            features_from(bad)


def test_features_enter_keys_only_when_not_the_default():
    dense = Method("trak", proj_dim=64, features="dense", ridge_scale=0.0)
    fact = Method("trak", proj_dim=64, features="factorized", ridge_scale=0.0)
    assert "features" not in dense.hashed()  # keys made before the part existed stay valid
    assert dense.hashed() != fact.hashed()
    # Grad-Dot compares exact gradients unless the part always projects: then proj_dim counts
    gd = Method("grad-dot", proj_dim=32, features="factorized")
    assert gd.hashed()["proj_dim"] == 32
    assert "proj_dim" not in Method("grad-dot", features="dense").hashed()
    with pytest.raises(SpecError, match="exact per-sample gradients"):
        Method("if", features="factorized").impl.check(Method("if", features="factorized"), None)


def test_dense_featurizer_gives_exact_and_projected_gradients(toy_model, toy_data):
    exact = features_from("dense").featurizer(toy_model, None, 0, ARGS, CLASSIFICATION)
    g = torch.cat([b for _, b in per_sample_grads(toy_model, toy_data.x_train,
                                                   toy_data.y_train, None, "train", 1000)])
    assert torch.equal(exact.features(toy_data.train, None, "train"), g)
    proj = GaussianProjector(g.shape[1], 16, seed=3)
    fz = DenseFeaturizer.with_projector(toy_model, proj, ARGS, CLASSIFICATION)
    # measured 1e-7; float32 products in another order
    torch.testing.assert_close(fz.features(toy_data.train, None, "train"), g @ proj.matrix(),
                               rtol=1e-4, atol=1e-5)


class SignFeaturizer(Featurizer):
    """The signs of the exact gradients."""

    def __init__(self, inner: Featurizer) -> None:
        self.inner, self.dim = inner, inner.dim

    def batches(self, samples, mask, split, offset=0):
        for rows, g in self.inner.batches(samples, mask, split, offset):
            yield rows, torch.sign(g)


@register_features
@dataclass(frozen=True)
class Signs(GradientFeatures):
    """A part of one's own (a stand-in for any other way to get features)."""

    name = "signs"

    def featurizer(self, net, k, seed, args, output, data=None, keep=True):
        return SignFeaturizer(features_from("dense").featurizer(net, None, seed, args, output,
                                                                data, keep))


def test_a_part_of_ones_own_serves_a_method(toy_data, tmp_path):
    from raytda import Sweep

    try:
        sweep = Sweep("toy-mlp", Method("grad-dot", features="signs", proj_dim=8),
                      ["naive:I=1"], lds=None, store=str(tmp_path), progress=False)
        sweep.run()
        s = sweep.scores("naive:I=1")
        # sign vectors: every dot product is an integer between -p and p
        assert torch.equal(s, s.round()) and s.abs().max() > 0
    finally:
        FEATURES.pop("signs")
