"""Specs: validation messages, JSON round-trip, stable content keys, member expansion."""

from __future__ import annotations

import json

import pytest

from raytda.ensembles import Ensemble, parse_ensemble
from raytda.methods import Method
from raytda.specs import LDSSpec, LoRASpec, Recipe, SpecError, derive_seed, stable_hash

ALL_SPECS = [
    Recipe(optimizer="adam", lr=1e-3, epochs=10, checkpoint_epochs=(5, 2)),
    Ensemble(kind="checkpoints-dropout", I=2, D=3, C=2, mask_mode="per-sample"),
    Method(name="if", damping=0.1, hessian_samples=50),
    LDSSpec(m=10, alpha=0.25, seed=1, models_per_subset=2),
    LoRASpec(r=4, alpha=16.0, base_epochs=3),
]


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("make, message", [
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
    (lambda: Recipe(epochs=5, checkpoint_epochs=(6,)), r"checkpoint_epochs must lie in \[1, 5\]"),
    (lambda: Recipe(optimizer="lbfgs"), "unknown optimizer 'lbfgs'"),
    (lambda: Recipe(lr=0.0), "lr must be > 0"),
    (lambda: parse_ensemble("dropout:I=five"), "I must be an integer.*'five'"),
    (lambda: parse_ensemble("dropout:I5"), "cannot parse 'I5'"),
    (lambda: parse_ensemble("dropout:X=5"), "unknown ensemble field 'X'"),
    (lambda: Ensemble.from_dict({"kind": "naive", "Z": 1}), r"unknown field\(s\) \['Z'\]"),
    (lambda: Recipe.from_dict({"epochs": 5, "size": 3}), r"Recipe: unknown field\(s\) \['size'\]"),
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
    assert LoRASpec(targets=["q_proj"]).targets == ("q_proj",)
    with pytest.raises(AttributeError):
        r.epochs = 3  # type: ignore[misc]


# ----------------------------------------------------------------------------- keys


def test_keys_are_pinned():
    """Keys address stored artifacts: if this fails, every cache entry is orphaned.
    Update the literals only for an intentional, announced change of spec content."""
    assert LDSSpec().key == "52db272a8b40c3b9"
    # Artifact keys use Method.hashed(), never Method.key (which hashes every field, so it
    # moved when proj_dim and features became None, "chosen per Task", in issue 28). An
    # explicit TRAK at k = 2048 with dense features and TRAK's own ridge (ridge_scale 0,
    # which adds nothing) hashes as Method() did before.
    assert stable_hash(Method("trak", proj_dim=2048, features="dense", ridge_scale=0.0)
                       .hashed()) == "b87fe0c61052bb69"
    assert stable_hash(Method("grad-dot", features="dense").hashed()) == "9e29c35e76823473"
    assert Ensemble(kind="dropout", I=5, D=10).key == "a301d288e99621ab"
    # Job keys also hash raytda's version (0.2.0: the Task interface changed every job's
    # spec, so 0.1 stores are not reused; 0.3.0: the data's fingerprints entered the keys;
    # 0.4.0: one schema for the built-in tasks, Setting removed from the API).
    from raytda.plan.models import TrainModel
    from raytda.tasks import get_task

    # Issue 17 moved the keys of the Setting-based built-ins once (version 2 -> 3: they
    # became task classes with settings dicts); cifar2-resnet9 and maestro-mt kept theirs.
    assert get_task("toy-mlp").declared_key == "947115ad1c8409f170e4"
    assert get_task("toy-mlp").key == "8a4c27d67850f5e1dacd"
    assert TrainModel(get_task("toy-mlp"), 0).key == "model-1d5a7c4cd1ad2a0d2f51"
    assert get_task("cifar2-resnet9").declared_key == "9a21f709cc491e18acd7"
    assert get_task("maestro-mt").declared_key == "48f6a1d184fa590c90ca"


def test_key_distinguishes_types_with_equal_fields():
    assert Ensemble().key != Ensemble(kind="naive", I=2).key
    assert LDSSpec(m=3).key != LDSSpec(m=4).key


def test_stable_hash_ignores_dict_order_and_derive_seed_is_ordered():
    assert stable_hash({"a": 1, "b": 2}) == stable_hash({"b": 2, "a": 1})
    assert derive_seed("mask", 1, 2) == derive_seed("mask", 1, 2)
    assert derive_seed("mask", 1, 2) != derive_seed("mask", 2, 1)
    assert 0 <= derive_seed("x") < 2 ** 63


def test_method_hashed_holds_only_relevant_fields():
    assert Method(damping=1.0, proj_dim=8, features="dense", ridge_scale=3.0).hashed() \
        == Method(damping=2.0, proj_dim=8, features="dense", ridge_scale=3.0).hashed()
    assert Method(proj_dim=8, features="dense", ridge_scale=3.0).hashed() \
        != Method(proj_dim=16, features="dense", ridge_scale=3.0).hashed()
    # a nonzero ridge scale enters the key; 0 (TRAK's own ridge) adds nothing
    assert Method(proj_dim=8, features="dense", ridge_scale=3.0).hashed()["ridge_scale"] == 3.0
    assert "ridge_scale" not in Method(proj_dim=8, features="dense", ridge_scale=0.0).hashed()
    with pytest.raises(SpecError, match="not both"):
        Method(ridge=1e-3, ridge_scale=3.0)
    assert Method("if", damping=1.0, features="dense").hashed() \
        != Method("if", damping=2.0, features="dense").hashed()
    assert Method("grad-cos", proj_dim=8, features="dense").hashed() == {"name": "grad-cos"}


def test_parse_ensemble_and_label():
    ens = parse_ensemble("dropout: I=5, D=10, mask_mode=per-sample")
    assert ens == Ensemble(kind="dropout", I=5, D=10, mask_mode="per-sample")
    assert ens.label == "dropout I=5 D=10 per-sample"
    assert parse_ensemble("naive:I=3").label == "naive I=3"
