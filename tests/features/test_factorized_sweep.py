"""Factorized features through the whole product: a sweep of TRAK, Grad-Dot and Grad-Cos on
plain, masked and LoRA members, the Attributor on its payloads, and what the results say."""

from __future__ import annotations

import pytest
import torch

from raytda import Sweep
from raytda.attributor import Attributor
from raytda.methods import Method
from raytda.specs import SpecError


@pytest.fixture(scope="module")
def finished(tmp_path_factory, one_torch_thread):
    sweep = Sweep("toy-mlp", [Method("trak", proj_dim=16, features="factorized"),
                              Method("grad-cos", proj_dim=16, features="factorized")],
                  ["naive:I=1", "dropout:I=1,D=2", "dropout:I=1,D=2,mask_mode=per-sample"],
                  lds=None, store=str(tmp_path_factory.mktemp("st")), progress=False)
    sweep.run()
    return sweep


def test_the_results_say_which_features(finished):
    table = finished.results
    assert set(table["features"]) == {"factorized:uncovered=dense"}
    assert len(table) == 6 and table["n_members"].min() >= 1


@pytest.mark.parametrize("ens", ["naive:I=1", "dropout:I=1,D=2",
                                 "dropout:I=1,D=2,mask_mode=per-sample"])
def test_the_attributor_equals_the_batch_path(finished, ens):
    attr = Attributor.from_sweep(finished, ens, method="trak")
    x, y = finished.spec.tasks[0].data().test.tensors()
    ref = finished.scores(ens, method="trak")
    # measured 3e-7: the same features, a solve in another order
    assert float((attr.scores(x, y) - ref).abs().max() / ref.abs().max()) < 1e-5


def test_keys_differ_from_dense_and_models_are_shared(finished, tmp_path):
    dense = Sweep("toy-mlp", Method("trak", proj_dim=16), ["naive:I=1"], lds=None,
                  store=finished.store.uri, progress=False)
    fact = finished.evaluation("naive:I=1", method="trak")
    dense_ev = dense.evaluation("naive:I=1")
    assert dense_ev.models()[0].key == fact.models()[0].key
    assert dense_ev.blocks()[0].key != fact.blocks()[0].key


def test_lora_members_are_factorized_over_their_adapter(tmp_path):
    sweep = Sweep("toy-gpt", Method("trak", proj_dim=8, features="factorized"),
                  ["lora:I=1,L=2"], lds=None, store=str(tmp_path), progress=False)
    sweep.run()
    s = sweep.scores("lora:I=1,L=2")
    assert torch.isfinite(s).all() and s.abs().max() > 0
    ev, store = sweep.evaluation("lora:I=1,L=2"), sweep.store
    base_params = store.meta(ev.models()[0].key)["params"]
    blocks = ev.blocks()
    assert len(blocks) == 2 and len({b.model.key for b in blocks}) == 2  # one per adapter
    for block in blocks:
        meta = store.meta(block.key)
        # exactly the adapter's parameters were featurized (its LoRA factors and the
        # biases peft trains), all of them inside factored layers: a base weight taken
        # along would raise the count towards the base model's and show up uncovered
        assert meta["n_params"] == store.meta(block.model.key)["params"] < base_params
        assert meta["features_uncovered"] == [] and meta["features_layers"] > 0


def test_if_refuses_features_that_are_not_exact(tmp_path):
    with pytest.raises(SpecError, match="exact per-sample gradients"):
        Sweep("toy-mlp", Method("if", features="factorized"), ["naive:I=1"], lds=None,
              store=str(tmp_path), progress=False)
