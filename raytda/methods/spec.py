"""The Method spec: a registered method's name and its math parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from raytda.methods.base import AttributionMethod, method_class
from raytda.specs import Spec, _check

if TYPE_CHECKING:
    from raytda.features import GradientFeatures


@dataclass(frozen=True)
class Method(Spec):
    """A TDA method and its math parameters.

    ``proj_dim`` (TRAK) is the random projection dimension k; None (the default) lets
    each Task choose: the k it declares (``Task.default_proj_dim``: the paper's settings
    keep the paper's 2048), else :data:`~raytda.methods.k_rule.PROJ_DIM_RULE` from its
    train size. ``ridge`` is TRAK's ridge lambda as a number; None (the default) makes it
    ``ridge_scale`` times the kernel's mean nonzero eigenvalue, tr(Phi^T Phi) / min(n, k),
    computed per member when it is solved. ``ridge_scale`` None (the default) lets each
    Task choose: the scale it declares (``Task.default_ridge_scale``: the paper's settings
    keep TRAK's own, 0), else :data:`~raytda.methods.k_rule.RIDGE_RULE`; 0 means TRAK's
    own: "no ridge unless the kernel is singular, then the smallest that makes it
    solvable". The value used is recorded with the result (``ridge_max``).
    ``damping``, ``cg_*``, ``curvature`` (``"ggn"``, the Gauss-Newton matrix, or
    ``"hessian"``, the exact Hessian) and ``hessian_samples`` (a cap on the rows the
    curvature is taken over) are for IF; ``damping``, ``hessian_samples`` and ``fisher``
    (EK-FAC's curvature labels: ``"true"``, drawn from the model, or ``"empirical"``, the
    data's) for EK-FAC.
    ``features`` is how per-sample gradients become features (:mod:`raytda.features`:
    ``"dense"``, or a registered part, with options as ``"name:opt=value"``); None (the
    default) lets each Task choose: the part it declares (``Task.default_features``),
    else :data:`~raytda.features.choice.FEATURES_RULE` from its model's size (dense
    where per-sample gradients are affordable). ``resolved(task)`` makes them concrete,
    which a sweep does per Task before any key is made (:class:`~raytda.plan.evaluate.Evaluate`),
    and records in ``chosen`` what was chosen and why (not part of any key).
    ``options`` holds the parameters of a user's own method (JSON values).
    Only what changes the method's scores enters keys: the fields it declares
    (``AttributionMethod.params``), and the features part when it is not the default
    (with ``proj_dim`` when that part projects for a method that would not).
    """

    name: str = "trak"
    proj_dim: int | None = None  # None: chosen per Task (see above)
    ridge: float | None = None
    ridge_scale: float | None = None  # None: chosen per Task (see above)
    damping: float = 1e-3
    cg_max_iter: int = 100
    cg_tol: float = 1e-6
    hessian_samples: int | None = None  # None: every row the member was trained on
    curvature: str = "ggn"
    fisher: str = "true"
    features: str | None = None  # None: chosen per Task (see above)
    options: dict[str, Any] = field(default_factory=dict)
    #: what ``resolved`` chose, one "field=value (why)" each; never in keys or equality
    chosen: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        method_class(self.name)  # unknown names fail here, with the list of known ones
        _check(self.proj_dim is None or (isinstance(self.proj_dim, int) and self.proj_dim >= 1),
               f"projection dimension must be an integer >= 1, got {self.proj_dim!r}")
        _check(self.ridge is None or self.ridge >= 0, f"ridge must be >= 0, got {self.ridge}")
        _check(self.ridge_scale is None or self.ridge_scale >= 0,
               f"ridge_scale must be >= 0, got {self.ridge_scale}")
        _check(self.ridge is None or not self.ridge_scale,
               f"give ridge ({self.ridge}) or ridge_scale ({self.ridge_scale}), not both")
        _check(self.damping >= 0, f"damping must be >= 0, got {self.damping}")
        _check(self.cg_max_iter >= 1, f"cg_max_iter must be >= 1, got {self.cg_max_iter}")
        _check(self.curvature in ("ggn", "hessian"),
               f"curvature must be 'ggn' or 'hessian', got {self.curvature!r}")
        _check(self.fisher in ("true", "empirical"),
               f"fisher must be 'true' or 'empirical', got {self.fisher!r}")
        _check(isinstance(self.options, dict), "options must be a dict of JSON values")
        from raytda.features import features_from

        if self.features == "auto":  # the CLI's and sweep files' spelling of None
            object.__setattr__(self, "features", None)
        if self.features is not None:
            # the canonical spelling, so equal parts give equal specs and keys
            object.__setattr__(self, "features", features_from(self.features).spec_string())
        object.__setattr__(self, "chosen", tuple(self.chosen))

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        if d["fisher"] == "true":  # the default adds nothing: earlier keys stay as they were
            d.pop("fisher")
        return d

    def __hash__(self) -> int:  # options is a dict; hash by content key
        return hash(self.key)

    @property
    def impl(self) -> AttributionMethod:
        return method_class(self.name)

    @property
    def is_resolved(self) -> bool:
        """Whether what keys hold is concrete: ``features``, and ``proj_dim`` unless the
        method compares exact gradients (see ``resolved``)."""
        if self.features is None or self._ridge_open:
            return False
        if self.proj_dim is not None:
            return True
        from raytda.features import features_from

        return not self.impl.projected and features_from(self.features).exact

    def resolved(self, task: Any) -> Method:
        """This Method with ``proj_dim`` and ``features`` made concrete for ``task``: an
        explicit value stays; else what the Task declares; else the rules
        (:mod:`raytda.methods.k_rule`, :mod:`raytda.features.choice`). What was chosen is
        listed in ``chosen``. Keys are made from the result, so the same concrete values
        share artifacts however they were arrived at."""
        if self.proj_dim is not None and self.features is not None and not self._ridge_open:
            return self
        from raytda.features.choice import FEATURES_RULE
        from raytda.methods.k_rule import PROJ_DIM_RULE, RIDGE_RULE
        from raytda.tasks.size import task_size

        chosen: list[str] = []
        features = self.features
        if features is None:
            declared = getattr(task, "default_features", None)
            if self.impl.needs_exact_gradients:
                features, why = "dense", f"method {self.name} needs exact gradients"
            elif declared is not None:
                features, why = declared, f"declared by task {task.name}"
            else:
                n_params = task_size(task).n_params
                features, why = FEATURES_RULE.choose(n_params), FEATURES_RULE.why(n_params)
            from raytda.features import features_from

            features = features_from(features).spec_string()  # as the Method spells it
            chosen.append(f"features={features} ({why})")
        proj_dim = self.proj_dim
        if proj_dim is None:
            declared = getattr(task, "default_proj_dim", None)
            if declared is not None:
                proj_dim, why = int(declared), f"declared by task {task.name}"
            else:
                n_train = task_size(task).n_train
                proj_dim, why = PROJ_DIM_RULE.choose(n_train), PROJ_DIM_RULE.why(n_train)
            out = self.replace(proj_dim=proj_dim, features=features)
            if out.impl.feature_dim(out) is not None:  # a k the method never uses is no news
                chosen.append(f"proj_dim={proj_dim} ({why})")
        ridge_scale = self.ridge_scale
        if self._ridge_open:
            declared = getattr(task, "default_ridge_scale", None)
            if declared is not None:
                ridge_scale, why = float(declared), f"declared by task {task.name}"
            else:
                ridge_scale, why = RIDGE_RULE.choose(), RIDGE_RULE.why()
            chosen.append(f"ridge_scale={ridge_scale:g} ({why})")
        return self.replace(proj_dim=proj_dim, features=features, ridge_scale=ridge_scale,
                            chosen=(*self.chosen, *chosen))

    @property
    def _ridge_open(self) -> bool:
        """Whether the method has a relative ridge and neither ridge was given."""
        return ("ridge_scale" in self.impl.params and self.ridge is None
                and self.ridge_scale is None)

    def _require_resolved(self) -> None:
        _check(self.is_resolved,
               f"method {self.name!r} has proj_dim or features chosen per Task (None); "
               f"call Method.resolved(task) first (a sweep does this for every Task)")

    @cached_property
    def features_part(self) -> GradientFeatures:
        """The gradient-features part ``features`` names (once resolved; made once)."""
        from raytda.features import features_from

        self._require_resolved()
        return features_from(self.features)

    @cached_property
    def feature_dim(self) -> int | None:
        """The dimensions its members' featurizers are asked for (once resolved): the
        method's rule (``AttributionMethod.feature_dim``), computed once; None: exact
        gradients."""
        self._require_resolved()
        return self.impl.feature_dim(self)

    @property
    def chosen_fields(self) -> frozenset[str]:
        """The fields ``resolved`` chose (not given by the user)."""
        return frozenset(c.partition("=")[0] for c in self.chosen)

    @property
    def label(self) -> str:
        """How results tables, plots and ``raytda scores --method`` name this method: its
        name, then each parameter that sets its scores and differs from the method's
        defaults (``trak``, ``trak proj_dim=8192``,
        ``trak features=factorized:uncovered=dense``), so two variants of one method in a
        sweep never share a row's name. Values chosen per Task (``chosen``, or not yet
        resolved) are not named: the results' ``proj_dim`` and ``features`` columns say
        them."""
        import json
        from dataclasses import fields

        defaults = {f.name: f.default for f in fields(Method)}
        skip = {"name", "revision", "features", *self.chosen_fields}
        # proj_dim counts for a method that does not project when its features do
        projects = self.features not in (None, "dense") and self.proj_dim is not None \
            and self.feature_dim is not None
        candidates = (*self.impl.params, *(("proj_dim",) if projects else ()), "options")
        shown = [k for k in dict.fromkeys(candidates)
                 if k not in skip and getattr(self, k) is not None
                 and getattr(self, k) != defaults.get(k) and getattr(self, k) != {}]
        parts = [f"{k}={json.dumps(v, sort_keys=True, separators=(',', ':')) if isinstance(v, dict) else v}"
                 for k in shown for v in (getattr(self, k),)]
        if self.features not in (None, "dense") and "features" not in self.chosen_fields:
            parts.append(f"features={self.features}")
        return " ".join([self.name, ",".join(parts)]) if parts else self.name

    def hashed(self) -> dict[str, Any]:
        """Only the fields that affect this method's scores (for artifact keys); a Method
        must be ``resolved`` first."""
        self._require_resolved()
        out: dict[str, Any] = {"name": self.name}
        if self.impl.revision:
            out["revision"] = self.impl.revision
        out.update(self.impl.key_params(self))
        if self.features != "dense":  # the default adds nothing: earlier keys stay valid
            out["features"] = self.features_part.hashed()
            if self.feature_dim is not None:
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
