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
from dataclasses import dataclass, field
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


# --------------------------------------------------------------------------- setting

@dataclass(frozen=True)
class DataSpec(Spec):
    """Which samples of a built-in source (:mod:`raytda.data.sources`): sizes and seed.

    ``root`` is where the files are; it is not part of the content key because the same
    files may live in different places on different machines. ``seq_len`` is the number of
    predicted tokens per sample for token sources (None otherwise; left out of the key then).

    ``normalize`` is ``(mean, std)``: image sources (MNIST, CIFAR-2, digits) scale pixels to
    [0, 1] and then, when it is set, map every feature v to ``(v - mean) / std``, as a
    torchvision ``Normalize`` with the same constant for every channel. None (no
    normalization) is left out of the key, so specs that never set it keep their keys. The
    paper's benchmark (dattri 0.3.0) normalizes; :data:`PAPER_NORMALIZE` holds its constants.
    """

    source: str
    n_train: int
    n_test: int
    seed: int = 0
    root: str | None = field(default=None, compare=False)
    seq_len: int | None = None
    normalize: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        _check(bool(self.source), "data source must be non-empty")
        _check(self.n_train >= 2, f"n_train must be >= 2, got {self.n_train}")
        _check(self.n_test >= 1, f"n_test must be >= 1, got {self.n_test}")
        _check(self.seq_len is None or (isinstance(self.seq_len, int) and self.seq_len >= 1),
               f"seq_len (tokens per sample) must be None or an integer >= 1, "
               f"got {self.seq_len!r}")
        if self.normalize is not None:
            _check(len(self.normalize) == 2,
                   f"normalize must be (mean, std) or None, got {self.normalize!r}")
            mean, std = (float(v) for v in self.normalize)
            _check(std > 0, f"normalize std must be > 0, got {std}")
            object.__setattr__(self, "normalize", (mean, std))

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d.pop("root")
        for name in ("seq_len", "normalize"):  # unset: left out, so older keys stay valid
            if d[name] is None:
                d.pop(name)
            elif name == "normalize":
                d[name] = list(d[name])
        return d


# Per-dataset (mean, std) of dattri 0.3.0's benchmark loaders (benchmark/datasets/mnist and
# .../cifar: torchvision ``Normalize((0.1307,), (0.3081,))`` and ``Normalize((0.5,) * 3,
# (0.5,) * 3)`` after ``ToTensor``), which the paper's experiments use.
PAPER_NORMALIZE: dict[str, tuple[float, float]] = {
    "mnist": (0.1307, 0.3081),
    "cifar2": (0.5, 0.5),
}


MODEL_ARCHS = ("mlp", "gpt")
# The fields each architecture uses; the others must stay unset and are left out of the key
# (so adding the GPT fields left the keys of MLP settings unchanged).
ARCH_FIELDS = {
    "mlp": ("in_dim", "hidden", "out_dim"),
    "gpt": ("vocab", "n_layer", "n_head", "d_model", "block_size"),
}


@dataclass(frozen=True)
class ModelSpec(Spec):
    """An MLP with a dropout site after every hidden layer, or a small causal Transformer.

    ``mlp``: ``ModelSpec("mlp", in_dim, hidden, out_dim, dropout)``.
    ``gpt``: ``ModelSpec("gpt", vocab=65, n_layer=2, n_head=4, d_model=64, block_size=64)``,
    a decoder-only language model over ``vocab`` tokens and contexts up to ``block_size``
    (see :mod:`raytda.models.gpt`); ``dropout`` is the rate of its dropout sites.
    """

    arch: str
    in_dim: int | None = None
    hidden: tuple[int, ...] = ()
    out_dim: int | None = None
    dropout: float = 0.1
    vocab: int | None = None
    n_layer: int | None = None
    n_head: int | None = None
    d_model: int | None = None
    block_size: int | None = None

    def __post_init__(self) -> None:
        _check(self.arch in MODEL_ARCHS,
               f"unknown model arch {self.arch!r}; choose one of {list(MODEL_ARCHS)}")
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        _check(0.0 <= self.dropout < 1.0, f"dropout rate must be in [0, 1), got {self.dropout}")
        other = [f for a, fs in ARCH_FIELDS.items() if a != self.arch for f in fs]
        stray = [f for f in other if getattr(self, f) not in (None, ())]
        _check(not stray, f"field(s) {stray} do not apply to arch {self.arch!r}")
        if self.arch == "mlp":
            _check(self.in_dim is not None and self.out_dim is not None,
                   "an 'mlp' needs in_dim and out_dim")
            _check(self.in_dim >= 1 and self.out_dim >= 2 and all(h >= 1 for h in self.hidden),
                   "model dimensions must be positive and out_dim >= 2")
            return
        missing = [f for f in ARCH_FIELDS["gpt"] if getattr(self, f) is None]
        _check(not missing, f"a 'gpt' needs {missing} (e.g. vocab=65, n_layer=2, n_head=4, "
                            f"d_model=64, block_size=64)")
        _check(all(isinstance(getattr(self, f), int) and getattr(self, f) >= 1
                   for f in ARCH_FIELDS["gpt"]), "gpt sizes must be integers >= 1")
        _check(self.vocab >= 2, f"vocab must be >= 2, got {self.vocab}")
        _check(self.d_model % self.n_head == 0,
               f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")

    @property
    def generative(self) -> bool:
        """Whether the model is a language model (output: sequence log-likelihood)."""
        return self.arch == "gpt"

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        for f in (f for a, fs in ARCH_FIELDS.items() if a != self.arch for f in fs):
            d.pop(f)
        return d


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


@dataclass(frozen=True)
class Setting(Spec):
    """A complete experimental setting: data, model and training recipe.

    ``lora`` configures LoRA Ensembles (None: :class:`LoRASpec` defaults); it is left out of
    the key when None, so settings that never set it keep their keys.
    """

    name: str
    data: DataSpec
    model: ModelSpec
    recipe: Recipe
    lora: LoRASpec | None = None
    _nested: ClassVar[dict[str, type]] = {"data": DataSpec, "model": ModelSpec, "recipe": Recipe,
                                          "lora": LoRASpec}

    def __post_init__(self) -> None:
        _check(bool(self.name), "setting name must be non-empty")
        text = self.data.seq_len is not None
        if self.model.generative:
            _check(text, f"a {self.model.arch!r} model needs token sequences: give the data "
                         f"spec a seq_len")
            _check(self.data.seq_len <= self.model.block_size,
                   f"seq_len {self.data.seq_len} exceeds the model's block_size "
                   f"{self.model.block_size}")
        else:
            _check(not text, f"seq_len is for token sequences and needs a generative model "
                             f"(arch 'gpt'), not {self.model.arch!r}")

    @property
    def lora_spec(self) -> LoRASpec:
        return self.lora if self.lora is not None else LoRASpec()

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        if d["lora"] is None:
            d.pop("lora")
        return d


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
