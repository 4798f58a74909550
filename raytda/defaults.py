"""What a sweep runs when it is not told: one definition for the CLI and the Python API.

Plain constants (no imports), so the CLI's ``--help`` can show them without loading
anything heavy.
"""

from __future__ import annotations

#: Ensembles (CLI grid form): naive against the paper's Dropout Ensemble with D=10, at
#: the I values of its figure 1.
DEFAULT_ENSEMBLE_GRIDS: tuple[str, ...] = ("naive:I=1|2|3|5", "dropout:I=1|2|3|5,D=10")

#: Settings: the embedded one, which needs no data files.
DEFAULT_SETTINGS: tuple[str, ...] = ("digits-mlp",)

#: Methods.
DEFAULT_METHODS: tuple[str, ...] = ("trak",)
