"""The Method spec: a registered method's name and its math parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from raytda.methods.base import AttributionMethod, method_class
from raytda.specs import Spec, _check

if TYPE_CHECKING:
    from raytda.features import GradientFeatures


@dataclass(frozen=True)
class Method(Spec):
    """A TDA method and its math parameters.

    ``proj_dim`` (TRAK) is the random projection dimension k; ``ridge`` None means
    "no ridge unless the kernel is singular, then the smallest that makes it solvable"
    (the value used is recorded with the result). ``damping``, ``cg_*``, ``curvature``
    (``"ggn"``, the Gauss-Newton matrix, or ``"hessian"``, the exact Hessian) and
    ``hessian_samples`` (a cap on the rows the curvature is taken over) are for IF.
    ``features`` is how per-sample gradients become features (:mod:`raytda.features`:
    ``"dense"``, or a registered part, with options as ``"name:opt=value"``).
    ``options`` holds the parameters of a user's own method (JSON values).
    Only what changes the method's scores enters keys: the fields it declares
    (``AttributionMethod.params``), and the features part when it is not the default
    (with ``proj_dim`` when that part projects for a method that would not).
    """

    name: str = "trak"
    proj_dim: int = 2048
    ridge: float | None = None
    damping: float = 1e-3
    cg_max_iter: int = 100
    cg_tol: float = 1e-6
    hessian_samples: int | None = None  # None: every row the member was trained on
    curvature: str = "ggn"
    features: str = "dense"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        method_class(self.name)  # unknown names fail here, with the list of known ones
        _check(isinstance(self.proj_dim, int) and self.proj_dim >= 1,
               f"projection dimension must be an integer >= 1, got {self.proj_dim!r}")
        _check(self.ridge is None or self.ridge >= 0, f"ridge must be >= 0, got {self.ridge}")
        _check(self.damping >= 0, f"damping must be >= 0, got {self.damping}")
        _check(self.cg_max_iter >= 1, f"cg_max_iter must be >= 1, got {self.cg_max_iter}")
        _check(self.curvature in ("ggn", "hessian"),
               f"curvature must be 'ggn' or 'hessian', got {self.curvature!r}")
        _check(isinstance(self.options, dict), "options must be a dict of JSON values")
        from raytda.features import features_from

        # the canonical spelling, so equal parts give equal specs and keys
        object.__setattr__(self, "features", features_from(self.features).spec_string())

    def __hash__(self) -> int:  # options is a dict; hash by content key
        return hash(self.key)

    @property
    def impl(self) -> AttributionMethod:
        return method_class(self.name)

    @property
    def features_part(self) -> GradientFeatures:
        """The gradient-features part ``features`` names."""
        from raytda.features import features_from

        return features_from(self.features)

    @property
    def label(self) -> str:
        """How results tables, plots and ``raytda scores --method`` name this method: its
        name, then each parameter that sets its scores and differs from the method's
        defaults (``trak``, ``trak proj_dim=8192``,
        ``trak features=factorized:uncovered=dense``), so two variants of one method in a
        sweep never share a row's name."""
        import json

        default = Method(self.name).hashed()
        parts = [f"{k}={json.dumps(v, sort_keys=True, separators=(',', ':')) if isinstance(v, dict) else v}"
                 for k, v in self.hashed().items()
                 if k not in ("name", "revision", "features") and default.get(k) != v]
        if self.features != "dense":
            parts.append(f"features={self.features}")
        return " ".join([self.name, ",".join(parts)]) if parts else self.name

    def hashed(self) -> dict[str, Any]:
        """Only the fields that affect this method's scores (for artifact keys)."""
        out: dict[str, Any] = {"name": self.name}
        if self.impl.revision:
            out["revision"] = self.impl.revision
        for f in self.impl.params:
            out[f] = getattr(self, f)
        if self.features != "dense":  # the default adds nothing: earlier keys stay valid
            out["features"] = self.features_part.hashed()
            if self.impl.feature_dim(self) is not None:
                out["proj_dim"] = self.proj_dim
        if self.options:
            out["options"] = self.options
        return out


def as_method(m: str | dict[str, Any] | Method, proj_dim: int | None = None) -> Method:
    """A Method from its name (with ``proj_dim`` when given), its fields as a mapping
    (``{"name": "trak", "proj_dim": 512}``, as in a sweep file) or a Method."""
    if isinstance(m, Method):
        return m
    if isinstance(m, dict):
        fields = dict(m) if proj_dim is None else {"proj_dim": proj_dim, **m}
        return Method.from_dict(fields)
    _check(isinstance(m, str), f"a method is a name or a mapping of its fields, got {m!r}")
    return Method(m) if proj_dim is None else Method(m, proj_dim=proj_dim)
