"""The Task: the one description of what is attributed.

Subclass :class:`Task` for your own model; raytda's built-in settings are Tasks too
(:mod:`raytda.tasks`). A Task says

- how to build the model (``build_model``) and call it (``forward``: batch -> logits);
- the train and test data (``train_data`` / ``test_data``: an ``(x, y)`` pair of tensors
  or any map-style torch ``Dataset`` of ``(x, y)`` items, read through a DataLoader);
- the model output attributed, f, and TRAK's Q (``output``: the classification margin by
  default, the sequence log-likelihood, or your own :class:`~raytda.core.outputs.ModelOutput`);
- how models are trained: raytda's trainer with a :class:`~raytda.specs.Recipe` and the
  Task's ``loss``, or your own ``train``; or not at all, from your own ``checkpoints``;
- its content key: ``name``, ``version`` and ``config()`` (plus the recipe and LoRA
  settings). Every artifact raytda stores is keyed by it, so bump ``version`` when the
  code behind the Task changes.

Dropout sites are the model's own ``nn.Dropout`` modules, so any model with dropout
supports Dropout Ensembles; ``lora.targets`` are module names handed to peft.

This module imports no torch: a planner can key a Task's jobs without loading it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from raytda.specs import LoRASpec, Recipe, SpecError, stable_hash

if TYPE_CHECKING:
    import torch
    from torch import nn

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
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    recipe: Recipe | None = None
    lora: LoRASpec | None = None
    dropout_mask_dims: int | None = None
    data_loader_workers: int = 0
    data_dir: str | None = None

    # ------------------------------------------------------------------ to override

    def config(self) -> dict[str, Any]:
        """The user's configuration (JSON values); part of the content key."""
        return {}

    def build_model(self) -> nn.Module:
        """A fresh, untrained model. raytda seeds the global RNG before calling this."""
        raise NotImplementedError(f"{type(self).__name__} must define build_model()")

    def train_data(self) -> Any:
        """The training set: an ``(x, y)`` pair of tensors or a torch Dataset."""
        raise NotImplementedError(f"{type(self).__name__} must define train_data()")

    def test_data(self) -> Any:
        """The test set (the samples attributed): tensors or a torch Dataset."""
        raise NotImplementedError(f"{type(self).__name__} must define test_data()")

    def output(self) -> ModelOutput:
        """f and Q: the classification margin and 1 - p_y by default."""
        from raytda.core.outputs import CLASSIFICATION

        return CLASSIFICATION

    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch (override e.g. for Hugging Face models: ``.logits``)."""
        return model(x)

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """A batch's mean training loss (mean cross-entropy over every prediction)."""
        from raytda.core.outputs import mean_cross_entropy

        return mean_cross_entropy(logits, y)

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
        """What identifies the test set beyond ``config()`` (JSON values), or None.

        None (the default): ``config()`` names the test data too. Return e.g. a digest of
        the test inputs to let Tasks that differ only in their test set share the train
        side: models, Q and the trainings are keyed by ``train_key`` (without it), the
        test-side artifacts (member test features, LDS outputs, results) by ``key``."""
        return None

    @property
    def key(self) -> str:
        """The content key: ``train_key``, plus ``test_config()`` when it is given."""
        train = self.train_key
        test = self.test_config()
        if test is None:
            return train
        try:
            return stable_hash({"train": train, "test": test}, 20)
        except TypeError as e:
            raise SpecError(f"Task {self.name!r}: test_config() must return JSON values "
                            f"({e})") from None

    @property
    def train_key(self) -> str:
        """The train side's content key: a hash of name, version, config and recipe.

        LoRA settings are not in it: they do not change a base model, so configurations
        that differ only there share base models; adapter keys add them."""
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
        from raytda.core.network import Network

        return Network(module, self.data().train.example(), lambda m, x: self.forward(m, x),
                       self.dropout_mask_dims)

    def __repr__(self) -> str:
        return f"<Task {self.name!r} v{self.version}>"
