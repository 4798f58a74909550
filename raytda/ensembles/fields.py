"""The fields of an ensemble configuration: what each means, its valid values, and what
it holds when its kind does not take it.

One definition for the Ensemble spec, the kinds' checks, Tune's search space and the
CLI's help. This module imports nothing of raytda, so any of them can import it.
"""

from __future__ import annotations

from types import MappingProxyType

MASK_MODES = ("fixed", "per-sample")

#: The fields of the CLI form, in the order it writes them.
FIELDS = ("I", "D", "C", "L", "mask_mode")

#: What each field means (used in errors, ``raytda --help`` and ``raytda list``).
FIELD_MEANINGS = MappingProxyType({
    "I": "number of trained models",
    "D": "dropout masks per model",
    "C": "checkpoints per training run",
    "L": "LoRA adapters per base model",
    "mask_mode": "'fixed': a member's dropout mask serves every sample; 'per-sample': "
                 "one mask per (member, sample)",
})

#: The value a field holds when its kind does not take it, and the only value it may
#: have then (``EnsembleKind.check``). mask_mode's is also its default for kinds that
#: take it; D, C and L have no default for the kinds that take them (see ``SIZE_FIELDS``).
FIELD_DEFAULTS: MappingProxyType[str, int | str] = MappingProxyType(
    {"D": 1, "C": 1, "L": 0, "mask_mode": "fixed"})

#: Sizes a kind that takes them must be given: a missing D once silently meant D=1 (a
#: "Dropout Ensemble" of one mask, worse than naive), so leaving one out is an error.
SIZE_FIELDS = ("D", "C", "L")

#: A sensible value of each size, for the example in the error that asks for it
#: (D=10 and L=3: the paper's usual Dropout and LoRA Ensembles).
SIZE_EXAMPLES = MappingProxyType({"D": 10, "C": 3, "L": 3})

#: Lowest valid value of each integer field.
FIELD_LOWEST = MappingProxyType({"I": 1, "D": 1, "C": 1, "L": 0})
