"""The Task: the one description of what is attributed.

Subclass :class:`Task` for your own model; raytda's built-in settings are Tasks too
(:mod:`raytda.tasks`). A Task says

- how to build the model (``build_model``) and call it (``forward``: batch -> logits);
- the train and test data (``train_data`` / ``test_data``: an ``(x, y)`` pair of tensors,
  any map-style torch ``Dataset`` of ``(x, y)`` items, read through a DataLoader, or rows
  that are dicts as a Hugging Face tokenizer gives them, ragged lengths padded per batch:
  :class:`~raytda.data.samples.DictSamples`);
- the model output attributed, f, and TRAK's Q (``output``: the classification margin by
  default, the sequence log-likelihood, or your own :class:`~raytda.core.outputs.ModelOutput`);
- how models are trained: raytda's trainer with a :class:`~raytda.specs.Recipe` and the
  Task's ``loss``, or your own ``train``; or not at all, from your own ``checkpoints``;
- its content key: ``name``, ``version`` and ``config()`` (plus the recipe and LoRA
  settings) and the data itself: a fingerprint of the train rows enters every train-side
  key, one of the test rows every test-side key (:mod:`raytda.data.check`). Changing one
  pixel or one label changes the keys; bump ``version`` when the code behind the Task
  changes.

Dropout sites are the model's own ``nn.Dropout`` modules, so any model with dropout
supports Dropout Ensembles; ``lora.targets`` are module names handed to peft.

The data fingerprint is taken once per Task object, by the check a sweep runs before any
work (``Sweep.check``, which reads every row anyway) or, failing that, the first time a
key is asked for; it travels with the Task when it is pickled, so Ray workers key jobs
without reading the data, and verify it when they load the data themselves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from raytda.specs import LoRASpec, Recipe, SpecError, stable_hash

if TYPE_CHECKING:
    import torch
    from torch import nn

    from raytda.core.batch import Batch
    from raytda.core.network import Network
    from raytda.core.outputs import ModelOutput
    from raytda.data import Samples, TaskData

Checkpoint = str | Path | Mapping[str, Any]


class Task:
    """What is attributed. Override ``build_model``, ``train_data``, ``test_data`` and
    set ``name``; everything else has a default (see the module docstring).

    Class attributes:
        name: the Task's name (required; part of every artifact key).
        version: bump it when the model, data or output code changes.
        recipe: raytda's trainer settings; None when you override ``train`` or give
            ``checkpoints``.
        lora: LoRA Ensemble settings (``targets`` are the module names peft adapts).
        dropout_mask_dims: how many trailing dimensions of a dropout site's input one
            mask covers (None: all of them per sample; 1 for sequence models that drop
            the same hidden units at every position).
        data_loader_workers: DataLoader workers when the data is a torch Dataset.
        data_dir: where the Task's files are, set from ``--data-dir`` /
            ``Sweep(data_dir=...)``; not part of the key (a location, not content).
        data_version: for data too large to hash: a string you change whenever the data
            changes; it then stands in the keys for the rows' digests (None: hash the rows).
        default_proj_dim: the projection dimension k methods use on this Task when the
            Method gives none (None: chosen from the train size by
            :data:`raytda.methods.k_rule.PROJ_DIM_RULE`; the paper's settings say 2048).
        default_features: the gradient features methods use on this Task when the Method
            gives none (None: chosen from the model's size by
            :data:`raytda.features.choice.FEATURES_RULE`).
        default_ridge_scale: TRAK's ridge as a multiple of its kernel's mean nonzero
            eigenvalue on this Task when the Method gives no ridge (None: chosen by
            :data:`raytda.methods.k_rule.RIDGE_RULE`; 0: TRAK's own, none unless the
            kernel is singular; the paper's settings say 0).
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    recipe: Recipe | None = None
    lora: LoRASpec | None = None
    dropout_mask_dims: int | None = None
    data_loader_workers: int = 0
    data_dir: str | None = None
    data_version: ClassVar[str | None] = None
    default_proj_dim: ClassVar[int | None] = None
    default_features: ClassVar[str | None] = None
    default_ridge_scale: ClassVar[float | None] = None

    # ------------------------------------------------------------------ to override

    def config(self) -> dict[str, Any]:
        """The user's configuration (JSON values); part of the content key."""
        return {}

    def build_model(self) -> nn.Module:
        """A fresh, untrained model. raytda seeds the global RNG before calling this."""
        raise NotImplementedError(f"{type(self).__name__} must define build_model()")

    def train_data(self) -> Any:
        """The training set: an ``(x, y)`` pair of tensors, a torch Dataset, or dict rows."""
        raise NotImplementedError(f"{type(self).__name__} must define train_data()")

    def test_data(self) -> Any:
        """The test set (the samples attributed): tensors or a torch Dataset."""
        raise NotImplementedError(f"{type(self).__name__} must define test_data()")

    def output(self) -> ModelOutput:
        """f and Q: the classification margin and 1 - p_y by default."""
        from raytda.core.outputs import CLASSIFICATION

        return CLASSIFICATION

    def forward(self, model: nn.Module, x: torch.Tensor | Batch) -> torch.Tensor:
        """Logits of a batch: ``model(x)``; for dict rows (x a
        :class:`~raytda.core.batch.Batch`) ``model(**x)``, taking ``.logits`` of an output
        object as Hugging Face models return it. Override for anything else."""
        from raytda.core.network import call_module

        return call_module(model, x)

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """A batch's mean training loss (mean cross-entropy over every prediction)."""
        from raytda.core.outputs import mean_cross_entropy

        return mean_cross_entropy(logits, y)

    @property
    def trains_with_fit(self) -> bool:
        """Whether it trains with raytda's own trainer (its ``train`` not overridden, a
        recipe given): what stacked training reproduces, so its models may be packed."""
        return type(self).train is Task.train and self.recipe is not None

    def train(self, model: nn.Module, data: Samples, seed: int, device: str,
              recipe: Recipe | None = None) -> dict[int, dict[str, torch.Tensor]]:
        """Train ``model`` in place on ``data``; return its state at each kept epoch.

        The default is raytda's trainer with ``recipe`` and ``loss``, keeping the epochs
        ``recipe.saved_epochs``. An override may return ``{}``: the final weights are then
        taken from ``model`` (and checkpoint ensembles need the recipe's epochs returned).
        ``recipe`` replaces ``self.recipe`` for this call (LoRA base models train shorter).
        """
        from raytda.core.train import fit

        recipe = recipe or self.recipe
        if recipe is None:
            raise SpecError(f"Task {self.name!r} has no recipe to train with: set "
                            f"Task.recipe, override Task.train, or give checkpoints()")
        states, _ = fit(model, recipe, data, seed, device, loss_fn=self.loss,
                        forward=self.forward)
        return states

    def checkpoints(self) -> Sequence[Sequence[Checkpoint]] | None:
        """Models you already trained: one list per training run, its checkpoints oldest
        first (the last is the final model), each a safetensors path or a state dict.
        When given, raytda trains no ensemble model."""
        return None

    # ------------------------------------------------------------------ derived

    def test_config(self) -> dict[str, Any] | None:
        """Anything else that identifies the test side (JSON values), or None.

        The test rows are fingerprinted already; use this for what the rows do not show
        (e.g. how test outputs are read). Models, Q and the trainings are keyed by
        ``train_key``; test-side artifacts (member test features, LDS outputs, results)
        by ``key``, so Tasks that differ only in their test set share the train side."""
        return None

    @property
    def key(self) -> str:
        """The content key of the test side: ``train_key``, the test data's fingerprint and
        ``test_config()``."""
        test = self.test_config()
        try:
            return stable_hash({"train": self.train_key, "test_data": self.data_identity()["test"],
                                "test": test}, 20)
        except TypeError as e:
            raise SpecError(f"Task {self.name!r}: test_config() must return JSON values "
                            f"({e})") from None

    @property
    def train_key(self) -> str:
        """The train side's content key: ``declared_key`` and the train data's fingerprint.

        LoRA settings are not in it: they do not change a base model, so configurations
        that differ only there share base models; adapter keys add them."""
        return stable_hash({"declared": self.declared_key,
                            "train_data": self.data_identity()["train"]}, 20)

    @property
    def declared_key(self) -> str:
        """What the Task says about itself, without its data: a hash of name, version,
        config, recipe and dropout mask dims."""
        if not self.name or not isinstance(self.name, str):
            raise SpecError(f"{type(self).__name__} has no key: set the class attribute "
                            f"'name' (and 'version'; config() adds your settings)")
        try:
            parts = {"name": self.name, "version": str(self.version), "config": self.config(),
                     "recipe": None if self.recipe is None else self.recipe.to_dict(),
                     "mask_dims": self.dropout_mask_dims}
            return stable_hash(parts, 20)
        except TypeError as e:
            raise SpecError(f"Task {self.name!r}: config() must return JSON values ({e})") from None

    # ------------------------------------------------------------------ data identity

    def data_identity(self) -> dict[str, Any]:
        """The fingerprints of the train and test data, ``{"train": ..., "test": ...}``.

        Taken once per Task object (``Sweep.check`` takes it afresh before every run);
        the first call without one reads every row."""
        ident = self.__dict__.get("_data_identity")
        if ident is None:
            from raytda.tasks.cache import fingerprint_task

            ident = fingerprint_task(self)
        return ident

    def set_data_identity(self, identity: dict[str, Any] | None) -> None:
        """Record the data fingerprints (None forgets them); raytda calls this."""
        # object.__setattr__: built-in Tasks may be frozen dataclasses.
        object.__setattr__(self, "_data_identity", identity)

    def known_data_identity(self) -> dict[str, Any] | None:
        """The fingerprints if taken already, else None (reads nothing)."""
        return self.__dict__.get("_data_identity")

    def _identity_state(self) -> dict[str, Any] | None:
        """Pickle state for Tasks with their own ``__reduce__``: the fingerprints."""
        ident = self.known_data_identity()
        return None if ident is None else {"_data_identity": ident}

    @property
    def lora_spec(self) -> LoRASpec:
        return self.lora if self.lora is not None else LoRASpec()

    @property
    def trains(self) -> bool:
        """Whether raytda can train this Task's models (a recipe or an own ``train``)."""
        return self.recipe is not None or type(self).train is not Task.train

    def saved_epochs(self) -> tuple[int | None, ...]:
        """Checkpoints each training run keeps, oldest first; None is the final model."""
        runs = self.checkpoints()
        if runs is not None:
            n = min(len(r) for r in runs) if runs else 1
            return (*range(1, n), None)
        if self.recipe is None:
            return (None,)
        r = self.recipe
        return tuple(None if e == r.epochs else e for e in r.saved_epochs)

    def data(self) -> TaskData:
        """Train and test samples (loaded once per process per Task key)."""
        from raytda.tasks.cache import task_data

        return task_data(self)

    def network(self, module: nn.Module) -> Network:
        """``module`` as attribution sees it: logits via ``forward``, masks on its
        dropout sites (probed with one training input)."""
        from raytda.core.network import Network, call_module

        # Not overridden: the default forward itself, which tells the linear fast path
        # (raytda.core.grads) that nothing but the module stands between input and logits.
        forward = call_module if type(self).forward is Task.forward \
            else (lambda m, x: self.forward(m, x))
        return Network(module, self.data().train.example(), forward, self.dropout_mask_dims)

    def __repr__(self) -> str:
        return f"<Task {self.name!r} v{self.version}>"
