"""The Ensemble spec: a kind and its sizes, validated by the kind's own class."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from raytda.ensembles.base import EnsembleKind, ensemble_kind
from raytda.specs import Member, Spec, SpecError, _check

MASK_MODES = ("fixed", "per-sample")


@dataclass(frozen=True)
class Ensemble(Spec):
    """An ensemble configuration: ``kind`` (a registered :class:`EnsembleKind`), ``I``
    trained models, ``D`` masks or projection passes, ``C`` checkpoints per run, ``L``
    LoRA adapters per base model. ``mask_mode`` 'fixed' gives one mask per member shared
    by all samples; 'per-sample' draws a mask per (member, sample), reproducibly from the
    sample index. Fields a kind does not take stay at their defaults.
    """

    kind: str = "naive"
    I: int = 1
    D: int = 1
    C: int = 1
    mask_mode: str = "fixed"
    L: int = 0

    def __post_init__(self) -> None:
        for f, low, what in (("I", 1, "number of trained models"),
                             ("D", 1, "dropout masks per model"),
                             ("C", 1, "checkpoints per run"), ("L", 0, "LoRA adapters per model")):
            v = getattr(self, f)
            _check(isinstance(v, int) and v >= low,
                   f"{f} ({what}) must be an integer >= {low}, got {v!r}")
        _check(self.mask_mode in MASK_MODES,
               f"unknown mask_mode {self.mask_mode!r}; choose one of {list(MASK_MODES)}")
        self.kind_class.check(self)

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

    def members(self, epochs: tuple[int | None, ...]) -> tuple[Member, ...]:
        return self.kind_class.members(self, epochs)

    def feature_members(self, epochs: tuple[int | None, ...]) -> tuple[Member, ...]:
        return self.kind_class.feature_members(self, epochs)


FIELDS = ("I", "D", "C", "L", "mask_mode")


def parse_ensemble(text: str) -> Ensemble:
    """Parse 'dropout:I=5,D=10', 'naive:I=3' or 'lora:I=1,L=3' (CLI form)."""
    kind, _, rest = text.partition(":")
    kw: dict[str, Any] = {"kind": kind.strip()}
    for part in filter(None, (p.strip() for p in rest.split(","))):
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
    return Ensemble(**kw)


def as_ensemble(e: str | Ensemble) -> Ensemble:
    """An Ensemble from its CLI form ('dropout:I=5,D=10') or an Ensemble."""
    return e if isinstance(e, Ensemble) else parse_ensemble(e)
