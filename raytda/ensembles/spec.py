"""The Ensemble spec: a kind and its sizes, validated by the kind's own class, and its
command-line form ('dropout:I=5,D=10'; grids 'dropout:I=1|3,D=10|25').

What the fields mean and hold when a kind does not take them is in
:mod:`raytda.ensembles.fields`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from raytda.ensembles.base import EnsembleKind, ensemble_kind
from raytda.ensembles.fields import (
    FIELD_DEFAULTS,
    FIELD_LOWEST,
    FIELD_MEANINGS,
    FIELDS,
    MASK_MODES,
    SIZE_EXAMPLES,
    SIZE_FIELDS,
)
from raytda.specs import Member, Spec, SpecError, _check


@dataclass(frozen=True)
class Ensemble(Spec):
    """An ensemble configuration: ``kind`` (a registered :class:`EnsembleKind`), ``I``
    trained models, ``D`` dropout masks (projection passes for 'projection-only'), ``C``
    checkpoints per training run, ``L`` LoRA adapters per base model. ``mask_mode``
    'fixed' gives one mask per member shared by all samples; 'per-sample' draws a mask per
    (member, sample), reproducibly from the sample index.

    A kind that takes D, C or L must be given it: ``Ensemble("dropout", 1)`` is an error
    that asks for D, as is ``'dropout:I=1'``. Fields a kind does not take are left out
    and hold :data:`FIELD_DEFAULTS` (D=1, C=1, L=0, mask_mode 'fixed').
    """

    kind: str = "naive"
    I: int = 1
    # None marks "not given" until __post_init__ replaces it (every field is an int after
    # construction, hence the int annotation).
    D: int = None  # type: ignore[assignment]
    C: int = None  # type: ignore[assignment]
    mask_mode: str = "fixed"
    L: int = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        for f, low in FIELD_LOWEST.items():
            v = getattr(self, f)
            _check(v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= low),
                   f"{f} ({FIELD_MEANINGS[f]}) must be an integer >= {low}, got {v!r}")
        _check(self.mask_mode in MASK_MODES,
               f"unknown mask_mode {self.mask_mode!r}; choose one of {list(MASK_MODES)}")
        kind = self.kind_class
        for f in SIZE_FIELDS:
            if f not in kind.takes and getattr(self, f) is None:
                object.__setattr__(self, f, FIELD_DEFAULTS[f])
        missing = [f for f in SIZE_FIELDS if getattr(self, f) is None]
        if missing:
            # A field the kind does not take is named first; the base check reads only
            # those (a kind's own check may read the sizes, which are still None here).
            EnsembleKind.check(kind, self)
            given = self._written_fields()
            filled = {**given, **{f: SIZE_EXAMPLES[f] for f in missing}}
            example = {f: filled[f] for f in FIELDS if f in filled}
            raise SpecError(
                f"ensemble {ensemble_text(self.kind, given)!r} does not set "
                f"{' or '.join(f'{f} ({FIELD_MEANINGS[f]})' for f in missing)}; "
                f"write e.g. {ensemble_text(self.kind, example)!r}")
        kind.check(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Ensemble:
        """The spec of a mapping (a sweep file's ``{kind: naive, I: 3}``); as in the CLI
        form, the number of models ``I`` must be given."""
        known = {"kind", *FIELDS}
        if "I" not in d and set(d) <= known:  # unknown fields are the base's error
            kind = d.get("kind", "naive")
            sizes = ensemble_kind(kind).sizes  # an unknown kind fails here first
            example = {"kind": kind, "I": 1, **{f: SIZE_EXAMPLES[f] for f in sizes}, **d}
            text = ", ".join(f"{k}: {v}" for k, v in example.items())
            raise SpecError(f"ensemble {dict(d)!r} does not set I ({FIELD_MEANINGS['I']}); "
                            f"write e.g. {{{text}}}")
        return super().from_dict(d)

    @property
    def kind_class(self) -> EnsembleKind:
        return ensemble_kind(self.kind)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        if d["L"] == 0:  # keeps the keys of non-LoRA configurations short
            d.pop("L")
        return d

    @property
    def label(self) -> str:
        return self.kind_class.label(self)

    @property
    def text(self) -> str:
        """The CLI form, 'dropout:I=5,D=10': the fields the kind takes (mask_mode when it
        is not the default); ``parse_ensemble(e.text) == e``."""
        return ensemble_text(self.kind, self._written_fields())

    def _written_fields(self) -> dict[str, Any]:
        """The fields the CLI form writes: I, the sizes the kind takes (those given, while
        the spec is being checked), mask_mode when it is not the default."""
        kind = self.kind_class
        fields = {f: getattr(self, f) for f in ("I", *kind.sizes) if getattr(self, f) is not None}
        if "mask_mode" in kind.takes and self.mask_mode != FIELD_DEFAULTS["mask_mode"]:
            fields["mask_mode"] = self.mask_mode
        return fields

    def members(self, epochs: tuple[int | None, ...]) -> tuple[Member, ...]:
        return self.kind_class.members(self, epochs)

    def feature_members(self, epochs: tuple[int | None, ...]) -> tuple[Member, ...]:
        return self.kind_class.feature_members(self, epochs)


def ensemble_text(kind: str, fields: dict[str, Any]) -> str:
    """'kind:F=v,...' (the CLI form) from a kind and its fields."""
    return f"{kind}:{','.join(f'{k}={v}' for k, v in fields.items())}"


def parse_ensemble(text: str) -> Ensemble:
    """Parse 'dropout:I=5,D=10', 'naive:I=3' or 'lora:I=1,L=3' (CLI form)."""
    kind, _, rest = text.partition(":")
    kw: dict[str, Any] = {"kind": kind.strip()}
    for part in _field_texts(text, rest):
        k, eq, v = part.partition("=")
        _check(bool(eq),
               f"cannot parse {part!r} in ensemble {text!r}; write e.g. 'dropout:I=5,D=10'")
        k = k.strip()
        _check(k in FIELDS, f"unknown ensemble field {k!r} in {text!r}; valid: {', '.join(FIELDS)}")
        _check(k not in kw, f"{k} is given twice in ensemble {text!r}; give each field once")
        if k == "mask_mode":
            kw[k] = v.strip()
            continue
        try:
            kw[k] = int(v)
        except ValueError:
            raise SpecError(f"{k} must be an integer in ensemble {text!r}, got {v.strip()!r}"
                            ) from None
    if "I" not in kw:
        # 'naive' alone once ran as naive I=1: the number of models is never implied.
        sizes = ensemble_kind(kw["kind"]).sizes  # an unknown kind fails here first
        given = {f: v for f, v in kw.items() if f != "kind"}
        example = {"I": 1, **{f: SIZE_EXAMPLES[f] for f in sizes}, **given}
        example = {f: example[f] for f in FIELDS if f in example}
        raise SpecError(f"ensemble {text!r} does not set I ({FIELD_MEANINGS['I']}); write "
                        f"e.g. {ensemble_text(kw['kind'], example)!r}")
    return Ensemble(**kw)


def _field_texts(text: str, rest: str) -> list[str]:
    """The 'F=v' parts of an ensemble's text; an empty one (a trailing or doubled comma)
    is an error, not nothing."""
    parts = [p.strip() for p in rest.split(",")] if rest.strip() else []
    if any(not p for p in parts):
        kept = [p for p in parts if p]
        example = (f"{text.partition(':')[0].strip()}:{','.join(kept)}" if kept
                   else "dropout:I=5,D=10")
        raise SpecError(f"ensemble {text!r} has an empty field (a trailing or doubled "
                        f"comma); write e.g. {example!r}")
    return parts


def expand_grid(text: str) -> list[Ensemble]:
    """'dropout:I=1|3,D=10|25' -> the four ensembles of that grid (CLI form)."""
    kind, _, rest = text.partition(":")
    fields = _field_texts(text, rest)
    options, names = [], set()
    for f in fields:
        name, eq, values = f.partition("=")
        if not eq:
            raise SpecError(f"cannot parse {f!r} in {text!r}; write e.g. 'dropout:I=1|3,D=10'")
        if name.strip() in names:
            raise SpecError(f"{name.strip()} is given twice in {text!r}; list its values "
                            f"once, e.g. '{name.strip()}=1|2'")
        names.add(name.strip())
        options.append([f"{name.strip()}={v.strip()}" for v in values.split("|")])
    if not options:  # 'naive' alone: parse_ensemble names what is missing
        return [parse_ensemble(text)]
    return [parse_ensemble(f"{kind}:{','.join(c)}") for c in itertools.product(*options)]


def as_ensemble(e: str | Ensemble) -> Ensemble:
    """An Ensemble from its CLI form ('dropout:I=5,D=10') or an Ensemble."""
    return e if isinstance(e, Ensemble) else parse_ensemble(e)
