"""Specs: validation messages, JSON round-trip, stable content keys, member expansion."""

from __future__ import annotations

import json

import pytest

from raytda.ensembles import Ensemble, parse_ensemble
from raytda.methods import Method
from raytda.settings import SETTINGS, get_setting
from raytda.specs import (
    DataSpec,
    LDSSpec,
    ModelSpec,
    Recipe,
    Setting,
    SpecError,
    derive_seed,
    stable_hash,
)

ALL_SPECS = [
    DataSpec("digits", n_train=100, n_test=20, seed=3),
    ModelSpec("mlp", 64, (32, 16), 10, 0.2),
    Recipe(optimizer="adam", lr=1e-3, epochs=10, checkpoint_epochs=(5, 2)),
    Ensemble(kind="checkpoints-dropout", I=2, D=3, C=2, mask_mode="per-sample"),
    Method(name="if", damping=0.1, hessian_samples=50),
    LDSSpec(m=10, alpha=0.25, seed=1, models_per_subset=2),
    *SETTINGS.values(),
]


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("make, message", [
    (lambda: get_setting("imagenet-vit"), r"unknown setting 'imagenet-vit'.*toy-mlp"),
    (lambda: get_setting("toy-mlp", bogus=1), r"unknown setting override\(s\) \['bogus'\]"),
    (lambda: Method(name="lissa"), r"unknown method 'lissa'; choose one of.*'trak'"),
    (lambda: Method(proj_dim=0), "projection dimension must be an integer >= 1, got 0"),
    (lambda: Method(ridge=-1.0), "ridge must be >= 0"),
    (lambda: Ensemble(kind="dropout", I=0), r"I \(number of trained models\) must be an integer >= 1, got 0"),
    (lambda: Ensemble(kind="dropout", D=0), r"D \(dropout masks per model\) must be an integer >= 1, got 0"),
    (lambda: Ensemble(kind="dropout", I=1.5), "integer >= 1, got 1.5"),
    (lambda: Ensemble(kind="bagging"), "unknown ensemble kind 'bagging'"),
    (lambda: Ensemble(kind="naive", D=3), "kind 'naive' takes no D"),
    (lambda: Ensemble(kind="dropout", C=2), r"kind 'dropout' takes no C .*takes \['D', 'I', 'mask_mode'\]"),
    (lambda: Ensemble(kind="dropout", mask_mode="random"), "unknown mask_mode 'random'"),
    (lambda: LDSSpec(alpha=0.0), r"alpha must lie in \(0, 1\), got 0.0"),
    (lambda: LDSSpec(alpha=1.0), r"alpha must lie in \(0, 1\), got 1.0"),
    (lambda: LDSSpec(alpha=-0.5), r"alpha must lie in \(0, 1\)"),
    (lambda: LDSSpec(m=2), r"at least 3 subsets \(m >= 3\)"),
    (lambda: DataSpec("digits", 1, 10), "n_train must be >= 2"),
    (lambda: ModelSpec("mlp", 8, (4,), 3, dropout=1.0), r"dropout rate must be in \[0, 1\)"),
    (lambda: ModelSpec("resnet", 8, (4,), 3), "unknown model arch 'resnet'"),
    (lambda: Recipe(epochs=5, checkpoint_epochs=(6,)), r"checkpoint_epochs must lie in \[1, 5\]"),
    (lambda: Recipe(optimizer="lbfgs"), "unknown optimizer 'lbfgs'"),
    (lambda: Recipe(lr=0.0), "lr must be > 0"),
    (lambda: parse_ensemble("dropout:I=five"), "I must be an integer.*'five'"),
    (lambda: parse_ensemble("dropout:I5"), "cannot parse 'I5'"),
    (lambda: parse_ensemble("dropout:X=5"), "unknown ensemble field 'X'"),
    (lambda: Ensemble.from_dict({"kind": "naive", "Z": 1}), r"unknown field\(s\) \['Z'\]"),
    (lambda: DataSpec.from_dict({"source": "digits", "n_train": 5, "n_test": 1, "size": 3}),
     r"DataSpec: unknown field\(s\) \['size'\]"),
])
def test_bad_inputs_raise_spec_error_with_helpful_message(make, message):
    with pytest.raises(SpecError, match=message):
        make()


def test_spec_error_is_a_value_error():
    assert issubclass(SpecError, ValueError)


# ----------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda s: type(s).__name__)
def test_json_round_trip_preserves_value_and_key(spec):
    text = spec.to_json()
    back = type(spec).from_dict(json.loads(text))
    assert back == spec
    assert back.key == spec.key
    assert back.to_json() == text


def test_specs_are_frozen_and_normalized():
    r = Recipe(epochs=10, checkpoint_epochs=[5, 2, 5])
    assert r.checkpoint_epochs == (2, 5) and r.saved_epochs == (2, 5, 10)
    assert ModelSpec("mlp", 8, [4, 4], 3).hidden == (4, 4)
    with pytest.raises(AttributeError):
        r.epochs = 3  # type: ignore[misc]


# ----------------------------------------------------------------------------- keys


def test_keys_are_pinned():
    """Keys address stored artifacts: if this fails, every cache entry is orphaned.
    Update the literals only for an intentional, announced change of spec content."""
    assert LDSSpec().key == "52db272a8b40c3b9"
    # Method gained IF's ``curvature``, then ``features``; artifact keys use Method.hashed(),
    # which leaves the default features out, so no artifact key moved with the second
    assert Method().key == "9a605c1517aced32"
    assert Ensemble(kind="dropout", I=5, D=10).key == "a301d288e99621ab"
    assert get_setting("toy-mlp").key == "8fef52d564f5c770"
    # Job keys also hash raytda's version (0.2.0: the Task interface changed every job's
    # spec, so 0.1 stores are not reused; 0.3.0: the data's fingerprints entered the keys).
    from raytda.plan.jobs import TrainModel
    from raytda.tasks import get_task

    assert get_task("toy-mlp").declared_key == "c27391a1d5cb7f92b6ef"
    assert get_task("toy-mlp").key == "78f6cb473a8d5069ed4f"
    assert TrainModel(get_task("toy-mlp"), 0).key == "model-1ab18a3e946a0013db78"


def test_key_ignores_data_location_but_not_content():
    base = get_setting("toy-mlp")
    assert get_setting("toy-mlp", data_dir="/somewhere/else").key == base.key
    assert get_setting("toy-mlp", n_train=40).key != base.key
    assert get_setting("toy-mlp", lr=0.1).key != base.key
    assert get_setting("toy-mlp", dropout=0.2).key != base.key


def test_key_distinguishes_types_with_equal_fields():
    assert Ensemble().key != Ensemble(kind="naive", I=2).key
    assert LDSSpec(m=3).key != LDSSpec(m=4).key


def test_stable_hash_ignores_dict_order_and_derive_seed_is_ordered():
    assert stable_hash({"a": 1, "b": 2}) == stable_hash({"b": 2, "a": 1})
    assert derive_seed("mask", 1, 2) == derive_seed("mask", 1, 2)
    assert derive_seed("mask", 1, 2) != derive_seed("mask", 2, 1)
    assert 0 <= derive_seed("x") < 2 ** 63


def test_method_hashed_holds_only_relevant_fields():
    assert Method(damping=1.0).hashed() == Method(damping=2.0).hashed()
    assert Method(proj_dim=8).hashed() != Method(proj_dim=16).hashed()
    assert Method("if", damping=1.0).hashed() != Method("if", damping=2.0).hashed()
    assert Method("grad-cos", proj_dim=8).hashed() == {"name": "grad-cos"}


# ----------------------------------------------------------------------------- settings


def test_get_setting_overrides():
    s = get_setting("toy-mlp", n_train=40, epochs=10, dropout=0.3, data_dir="/d")
    assert s.data.n_train == 40 and s.data.root == "/d"
    assert s.model.dropout == 0.3
    assert s.recipe.epochs == 10 and max(s.recipe.checkpoint_epochs) <= 10
    assert get_setting("toy-mlp") == SETTINGS["toy-mlp"]  # the registry is not mutated


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_registered_settings_are_consistent(name):
    s = get_setting(name)
    assert isinstance(s, Setting) and s.name == name
    assert s.recipe.epochs in s.recipe.saved_epochs


def test_parse_ensemble_and_label():
    ens = parse_ensemble("dropout: I=5, D=10, mask_mode=per-sample")
    assert ens == Ensemble(kind="dropout", I=5, D=10, mask_mode="per-sample")
    assert ens.label == "dropout I=5 D=10 per-sample"
    assert parse_ensemble("naive:I=3").label == "naive I=3"
