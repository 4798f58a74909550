"""The "sketch" gradient-features part: its spec parses and enters keys, it always
projects, and its featurizer gives the SketchProjector's features in row order with the
same per-sample masks, stating what it covers."""

from __future__ import annotations

import pytest
import torch

from raytda.core.args import ComputeArgs
from raytda.core.masks import MaskSpec
from raytda.core.outputs import CLASSIFICATION
from raytda.core.tensor_sketch import SketchProjector
from raytda.features import features_from
from raytda.features.sketch import SketchFeatures
from raytda.methods import Method
from raytda.specs import SpecError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ARGS = ComputeArgs(grad_batch=7)
PER_SAMPLE = MaskSpec(seed=4, rate=0.3, mode="per-sample")


def test_spec_parses_and_enters_keys():
    assert features_from("sketch") == SketchFeatures()
    assert features_from("sketch:uncovered=skip") == SketchFeatures(uncovered="skip")
    assert Method("trak", features="sketch").features == "sketch:uncovered=dense"
    keys = {f: Method("trak", proj_dim=64, features=f, ridge_scale=0.0).hashed() for f in
            ("dense", "factorized", "sketch")}
    assert len({str(sorted(h.items())) for h in keys.values()}) == 3
    for bad, why in [("sketch:uncovered=maybe", "'dense' or 'skip'"), ("sketch:k=3", "take no")]:
        with pytest.raises(SpecError, match=why):
            features_from(bad)


def test_it_always_projects(toy_model):
    assert not SketchFeatures.exact
    with pytest.raises(SpecError, match="always project"):
        SketchFeatures().featurizer(toy_model, None, 0, ARGS, CLASSIFICATION)
    with pytest.raises(SpecError, match="exact per-sample gradients"):
        Method("if", features="sketch").impl.check(Method("if", features="sketch"), None)


def test_featurizer_rows_are_the_projectors(toy_model, toy_data):
    fz = SketchFeatures().featurizer(toy_model, 32, 5, ARGS, CLASSIFICATION)
    got = fz.features(toy_data.test, PER_SAMPLE, "test")
    proj = SketchProjector(toy_model, 32, 5)
    want = torch.cat([f for _, f in proj.per_sample_features(
        toy_data.x_test, toy_data.y_test, PER_SAMPLE, "test", 100, CLASSIFICATION)])
    # grad_batch 7 against one batch: the same sums regrouped (float32 rounding, 1e-7 seen)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5 * want.abs().max().item())
    assert fz.dim == 32
    d = fz.describe()
    n = sum(p.numel() for p in toy_model.parameters() if p.requires_grad)
    assert d == {"proj_dim": 32, "n_params": n, "features_layers": 3, "features_uncovered": []}
