"""Ensemble fields: a size its kind takes (D, C, L) must be given, in Python as on the
command line; fields a kind does not take hold FIELD_DEFAULTS; the CLI form round-trips."""

from __future__ import annotations

import re

import pytest

from raytda.ensembles import ENSEMBLES, Ensemble, EnsembleKind, parse_ensemble, register_ensemble
from raytda.ensembles.fields import FIELD_DEFAULTS, SIZE_EXAMPLES, SIZE_FIELDS
from raytda.ensembles.spec import expand_grid
from raytda.specs import Member, SpecError

SIZED = [(k, f) for k in sorted(ENSEMBLES) for f in ENSEMBLES[k].sizes]


def full_kwargs(kind: str) -> dict[str, int]:
    return {"I": 2, **{f: SIZE_EXAMPLES[f] for f in ENSEMBLES[kind].sizes}}


def test_every_built_in_kind_that_takes_a_size_is_covered():
    assert {k for k, _ in SIZED} == {"dropout", "dropout-forward", "dropout-forward-shared",
                                     "projection-only", "checkpoints", "checkpoints-dropout",
                                     "lora"}


@pytest.mark.parametrize("kind, field", SIZED)
def test_a_missing_size_is_an_error_that_shows_the_syntax(kind, field):
    given = {k: v for k, v in full_kwargs(kind).items() if k != field}
    text = f"{kind}:" + ",".join(f"{k}={v}" for k, v in given.items())
    with pytest.raises(SpecError) as from_text:
        parse_ensemble(text)
    with pytest.raises(SpecError) as from_python:
        Ensemble(kind, **given)
    msg = str(from_text.value)
    assert msg == str(from_python.value)  # Ensemble("dropout", 1) is 'dropout:I=1'
    assert msg.startswith(f"ensemble {text!r} does not set {field} (")
    example = re.search(r"write e\.g\. '([^']+)'$", msg).group(1)
    assert parse_ensemble(example) == Ensemble(kind, **full_kwargs(kind))  # it works as written


def test_the_error_names_every_missing_size():
    with pytest.raises(SpecError, match=r"does not set D \(.*\) or C \(.*'checkpoints-dropout:"
                                        r"I=1,D=10,C=3'"):
        parse_ensemble("checkpoints-dropout:I=1")


def test_a_field_the_kind_does_not_take_is_named_before_a_missing_one():
    with pytest.raises(SpecError, match="kind 'dropout' takes no L"):
        parse_ensemble("dropout:I=1,L=2")


@pytest.mark.parametrize("kind", sorted(ENSEMBLES))
def test_fields_not_taken_hold_the_defaults_and_the_cli_form_round_trips(kind):
    ens = Ensemble(kind, **full_kwargs(kind))
    for f, default in FIELD_DEFAULTS.items():
        if f not in ENSEMBLES[kind].takes:
            assert getattr(ens, f) == default
    assert parse_ensemble(ens.text) == ens
    assert Ensemble.from_dict(ens.to_dict()) == ens


def test_keys_of_explicit_specs_are_unchanged():
    """Stores written before sizes became required stay valid (keys from the release
    before this change)."""
    assert Ensemble("dropout", 5, 10).key == "a301d288e99621ab"
    assert parse_ensemble("naive:I=1").key == Ensemble("naive", 1, 1, 1, "fixed", 0).key


def test_mask_mode_keeps_its_default_and_is_written_only_when_changed():
    assert parse_ensemble("dropout:I=1,D=3").mask_mode == "fixed"
    ens = parse_ensemble("dropout:I=1,D=3,mask_mode=per-sample")
    assert ens.text == "dropout:I=1,D=3,mask_mode=per-sample"


def test_a_grid_without_a_size_fails_on_its_first_configuration():
    with pytest.raises(SpecError, match="'dropout:I=1' does not set D"):
        expand_grid("dropout:I=1|3")
    assert [e.text for e in expand_grid("dropout:I=1|3,D=10")] == ["dropout:I=1,D=10",
                                                                    "dropout:I=3,D=10"]


def test_a_user_kind_that_takes_a_size_requires_it():
    @register_ensemble
    class FirstMasks(EnsembleKind):
        """Test kind: masks 0..D-1 of model 0 only."""

        name = "first-masks"
        takes = frozenset({"D"})

        def members(self, ens, epochs):
            return tuple(Member(0, None, d, d) for d in range(ens.D))

        def serve_time(self, ens, u):
            return ens.D * u.serve

    try:
        with pytest.raises(SpecError, match=r"'first-masks:I=1' does not set D .* "
                                            r"'first-masks:I=1,D=10'"):
            Ensemble("first-masks")
        assert Ensemble("first-masks", D=4).label == "first-masks I=1 D=4"
    finally:
        ENSEMBLES.pop("first-masks")


def test_labels_and_plot_lines_name_the_sizes_each_kind_declares():
    for kind in ENSEMBLES.values():
        assert set(kind.sizes) == kind.takes & set(SIZE_FIELDS)
    ens = Ensemble("checkpoints-dropout", I=2, D=3, C=4)
    assert ens.label == "checkpoints-dropout I=2 D=3 C=4"
    assert ens.kind_class.series({"D": 3, "C": 4}) == "checkpoints-dropout D=3"
    assert Ensemble("lora", I=1, L=3).kind_class.series({"L": 3}) == "lora"

    class PerAdapterLines(EnsembleKind):
        """Test kind (not registered): one cost-plot line per L."""

        name = "per-adapter-lines"
        takes = frozenset({"L"})
        series_sizes = frozenset({"L"})

    assert PerAdapterLines().series({"L": 3, "D": 1}) == "per-adapter-lines L=3"
