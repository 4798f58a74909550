"""The ensemble-kind interface and its registry.

An ensemble kind says which members a configuration averages, which of the fields D, C,
L and mask_mode it takes, what it needs of a method and of the model, and what it costs
in the paper's analytic model (appendix E). ``register_ensemble`` adds a kind from any
module; nothing else in raytda names kinds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from raytda.registry import Registry
from raytda.specs import Member, _check

if TYPE_CHECKING:
    from raytda.core.costs import UnitCosts
    from raytda.ensembles.spec import Ensemble


class EnsembleKind:
    """One kind of ensemble. Subclass, set ``name``, and override what differs.

    Class attributes:
        name: the kind as written in specs and on the command line.
        takes: which of ``D``, ``C``, ``L``, ``mask_mode`` it uses (others must be unset).
        uses_masks: members are dropout-masked (the model needs dropout sites).
        uses_lora: members are LoRA adapters on base models trained on the full set.
        uses_checkpoints: members include intermediate checkpoints of a training run.
        needs: method capabilities it depends on (``"q"``: TRAK's Q weighting,
            ``"projection"``: per-member projection seeds).
    """

    name: ClassVar[str] = ""
    takes: ClassVar[frozenset[str]] = frozenset()
    uses_masks: ClassVar[bool] = False
    uses_lora: ClassVar[bool] = False
    uses_checkpoints: ClassVar[bool] = False
    needs: ClassVar[frozenset[str]] = frozenset()

    def members(self, ens: Ensemble, epochs: tuple[int | None, ...]) -> tuple[Member, ...]:
        """Members whose scores (and Q) are averaged; ``epochs`` are the checkpoints a
        training run keeps, oldest first, ``None`` for its final weights."""
        raise NotImplementedError

    def feature_members(self, ens: Ensemble, epochs: tuple[int | None, ...]
                        ) -> tuple[Member, ...]:
        """Members whose gradient features are used (the score members by default)."""
        return self.members(ens, epochs)

    def train_time(self, ens: Ensemble, u: UnitCosts) -> float:
        """Appendix E: I x T_train."""
        return ens.I * u.train

    def serve_time(self, ens: Ensemble, u: UnitCosts) -> float:
        """Appendix E: one member serving per feature member."""
        raise NotImplementedError

    def stored_params(self, ens: Ensemble, per_model: int, per_adapter: int = 0) -> int:
        """Parameters the configuration keeps: I models (masks and projection seeds cost
        nothing to store)."""
        return ens.I * per_model

    def label(self, ens: Ensemble) -> str:
        parts = [self.name, f"I={ens.I}"]
        for f in ("L", "D", "C"):
            if f in self.takes:
                parts.append(f"{f}={getattr(ens, f)}")
        if "mask_mode" in self.takes and ens.mask_mode != "fixed":
            parts.append(ens.mask_mode)
        return " ".join(parts)

    def check(self, ens: Ensemble) -> None:
        """Raise SpecError for fields this kind does not take (or takes wrongly)."""
        defaults = {"D": 1, "C": 1, "L": 0, "mask_mode": "fixed"}
        for f, default in defaults.items():
            if f not in self.takes:
                _check(getattr(ens, f) == default,
                       f"ensemble kind {self.name!r} takes no {f} (got {getattr(ens, f)!r}); "
                       f"it takes {sorted(self.takes | {'I'})}")


ENSEMBLES: Registry[EnsembleKind] = Registry("ensemble kind")
register_ensemble = ENSEMBLES.register  # class decorator: a kind available by its name
ensemble_kind = ENSEMBLES.lookup  # the registered kind called ``name``


def checkpoint_epochs(ens: Ensemble, epochs: tuple[int | None, ...]) -> tuple[int | None, ...]:
    """The last C of a run's kept checkpoints, or a clear error when it keeps fewer."""
    _check(ens.C <= len(epochs),
           f"C={ens.C} checkpoints requested but each training run keeps {len(epochs)}; "
           f"keep more (Recipe.checkpoint_epochs, or more checkpoints per run)")
    return epochs[-ens.C:]
