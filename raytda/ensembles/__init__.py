"""Ensemble kinds (one class per kind, one file each) and the Ensemble spec.

``register_ensemble`` adds a kind from user code; see :class:`EnsembleKind`.
"""

from raytda.ensembles.base import ENSEMBLES, EnsembleKind, ensemble_kind, register_ensemble
from raytda.ensembles.spec import Ensemble, as_ensemble, parse_ensemble

__all__ = ["ENSEMBLES", "Ensemble", "EnsembleKind", "as_ensemble", "ensemble_kind", "parse_ensemble",
           "register_ensemble"]

# The paper's ensembles register themselves; importing any part of the package loads them.
from raytda.ensembles import builtin  # noqa: E402, F401, I001
