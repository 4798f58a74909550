"""Frozen, validated specifications: what to compute.

Every spec is a frozen dataclass that checks itself on construction, round-trips through
JSON (``to_dict`` / ``from_dict``) and has a stable content hash (``key``) that goes into
artifact addresses. "How" parameters (batch sizes, memory budgets, devices) live in
``raytda.core.args.ComputeArgs`` and are never hashed: they do not change results.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from raytda.errors import RaytdaError

T = TypeVar("T", bound="Spec")


class SpecError(RaytdaError, ValueError):
    """A specification is invalid; the message says what is wrong and how to fix it."""


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise SpecError(msg)


def stable_hash(obj: Any, n: int = 16) -> str:
    """Hex digest of a JSON-serializable object, independent of dict order."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed derived from any JSON-serializable parts (order matters)."""
    return int(stable_hash(list(parts), 16), 16) & ((1 << 63) - 1)


class Spec:
    """Mixin: JSON round-trip and content key for frozen dataclasses."""

    _nested: ClassVar[dict[str, type]] = {}

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if isinstance(v, Spec):
                v = v.to_dict()
            elif isinstance(v, tuple):
                v = [x.to_dict() if isinstance(x, Spec) else x for x in v]
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls: type[T], d: dict[str, Any]) -> T:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(d) - names
        _check(not unknown, f"{cls.__name__}: unknown field(s) {sorted(unknown)}; "
                            f"valid fields are {sorted(names)}")
        kw = {}
        for k, v in d.items():
            sub = cls._nested.get(k)
            if sub is not None and isinstance(v, dict):
                v = sub.from_dict(v)
            elif isinstance(v, list):
                v = tuple(v)
            kw[k] = v
        return cls(**kw)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @property
    def key(self) -> str:
        """Content hash of the spec (16 hex chars)."""
        return stable_hash([type(self).__name__, self.to_dict()])

    def replace(self: T, **changes: Any) -> T:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


# --------------------------------------------------------------------------- training

OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class Recipe(Spec):
    """How a model is trained. ``checkpoint_epochs`` are extra epochs whose weights are kept."""

    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    batch_size: int = 64
    epochs: int = 100
    checkpoint_epochs: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _check(self.optimizer in OPTIMIZERS,
               f"unknown optimizer {self.optimizer!r}; choose one of {list(OPTIMIZERS)}")
        _check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        _check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        _check(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        object.__setattr__(self, "betas", tuple(self.betas))
        eps = tuple(sorted({int(e) for e in self.checkpoint_epochs}))
        _check(all(1 <= e <= self.epochs for e in eps),
               f"checkpoint_epochs must lie in [1, {self.epochs}], got {list(eps)}")
        object.__setattr__(self, "checkpoint_epochs", eps)

    @property
    def saved_epochs(self) -> tuple[int, ...]:
        """Every epoch whose weights a training run keeps (the last one always)."""
        return tuple(sorted(set(self.checkpoint_epochs) | {self.epochs}))


LORA_BIAS = ("none", "lora_only", "all")


@dataclass(frozen=True)
class LoRASpec(Spec):
    """How the LoRA Ensemble trains its base models and adapters (paper, appendix C.2).

    Adapters: rank ``r``, scaling ``alpha / r``, no LoRA dropout, on the modules named in
    ``targets`` (W_q and W_v of every attention layer). ``bias`` is peft's option:
    'lora_only' (default) makes the biases of the adapted layers trainable and part of the
    adapter, which is the paper's "trainable biases" while keeping every change inside the
    q/v projections; 'all' would make every bias of the network trainable.

    Training: base models on the full training set for ``base_epochs`` (None: half the
    setting's epochs, the paper's 10 of 20), then each adapter on its own random half for
    ``epochs`` (None: half the setting's epochs) with learning rate ``lr`` (None: the
    setting's). Other optimizer settings are the setting's recipe.
    """

    r: int = 8
    alpha: float = 8.0
    dropout: float = 0.0
    bias: str = "lora_only"
    targets: tuple[str, ...] = ("q_proj", "v_proj")
    base_epochs: int | None = None
    epochs: int | None = None
    lr: float | None = None

    def __post_init__(self) -> None:
        _check(isinstance(self.r, int) and self.r >= 1, f"LoRA rank r must be >= 1, got {self.r!r}")
        _check(self.alpha > 0, f"LoRA alpha must be > 0, got {self.alpha}")
        _check(0.0 <= self.dropout < 1.0, f"LoRA dropout must be in [0, 1), got {self.dropout}")
        _check(self.bias in LORA_BIAS,
               f"unknown LoRA bias option {self.bias!r}; choose one of {list(LORA_BIAS)}")
        object.__setattr__(self, "targets", tuple(self.targets))
        _check(len(self.targets) > 0, "LoRA needs at least one target module")
        for name in ("base_epochs", "epochs"):
            v = getattr(self, name)
            _check(v is None or (isinstance(v, int) and v >= 1),
                   f"LoRA {name} must be None or an integer >= 1, got {v!r}")
        _check(self.lr is None or self.lr > 0, f"LoRA lr must be > 0, got {self.lr}")

    def base_recipe(self, recipe: Recipe) -> Recipe:
        """The recipe of a base model: the setting's, for ``base_epochs``, final weights only."""
        epochs = self.base_epochs or max(1, recipe.epochs // 2)
        return recipe.replace(epochs=epochs, checkpoint_epochs=())

    def adapter_recipe(self, recipe: Recipe) -> Recipe:
        """The recipe of one adapter's fine-tuning."""
        epochs = self.epochs or max(1, recipe.epochs // 2)
        return recipe.replace(epochs=epochs, checkpoint_epochs=(),
                              lr=self.lr if self.lr is not None else recipe.lr)


# --------------------------------------------------------------------------- members


@dataclass(frozen=True)
class Member:
    """One ensemble member: which base model, checkpoint, dropout mask and projection.

    ``model`` indexes the I independently trained models; ``checkpoint`` is an epoch
    (None = final weights); ``mask`` indexes the dropout masks of that model (None = no
    dropout); ``projection`` indexes the projection seeds; ``adapter`` indexes the LoRA
    adapters of base model ``model`` (None = not a LoRA member). Seeds are derived from
    these indices, so member (i, d) is the same object in every configuration that uses it.
    """

    model: int
    checkpoint: int | None = None
    mask: int | None = None
    projection: int = 0
    adapter: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["adapter"] is None:  # keeps the keys of non-LoRA members as they were
            d.pop("adapter")
        return d


# --------------------------------------------------------------------------- LDS


@dataclass(frozen=True)
class LDSSpec(Spec):
    """Linear datamodeling score: m subsets of size alpha*n, retrained from scratch."""

    m: int = 50
    alpha: float = 0.5
    seed: int = 12345
    models_per_subset: int = 1

    def __post_init__(self) -> None:
        _check(isinstance(self.m, int) and self.m >= 3,
               f"LDS needs at least 3 subsets (m >= 3), got {self.m!r}")
        _check(0.0 < self.alpha < 1.0, f"alpha must lie in (0, 1), got {self.alpha}")
        _check(self.models_per_subset >= 1,
               f"models_per_subset must be >= 1, got {self.models_per_subset}")
