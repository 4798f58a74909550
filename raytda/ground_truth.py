"""Ground truth for LDS that the user already has: f on the test set of models retrained
on given subsets of the training set."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from raytda.specs import SpecError


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """``subsets`` (m, n_train) booleans, or m lists of train indices; ``outputs``
    (m, n_test): the model output f of the model retrained on subset j, on each test sample.
    """

    subsets: np.ndarray
    outputs: np.ndarray

    def __post_init__(self) -> None:
        subsets = self.subsets
        if not (isinstance(subsets, np.ndarray) and subsets.dtype == bool):
            rows = [np.asarray(r, dtype=np.int64) for r in subsets]
            n = int(max((r.max() for r in rows if len(r)), default=-1)) + 1
            mask = np.zeros((len(rows), n), dtype=bool)
            for j, r in enumerate(rows):
                mask[j, r] = True
            subsets = mask
        object.__setattr__(self, "subsets", subsets)
        object.__setattr__(self, "outputs", np.asarray(self.outputs, dtype=np.float64))
        if self.outputs.ndim != 2 or self.outputs.shape[0] != self.subsets.shape[0]:
            raise SpecError(f"ground truth outputs must be (m subsets, n_test) = "
                            f"({self.subsets.shape[0]}, n_test), got {self.outputs.shape}")
        if self.subsets.shape[0] < 3:
            raise SpecError(f"LDS needs at least 3 subsets, the ground truth has "
                            f"{self.subsets.shape[0]}")

    @property
    def m(self) -> int:
        return int(self.subsets.shape[0])

    def check(self, n_train: int, n_test: int) -> None:
        """Raise SpecError unless it fits a task with these split sizes."""
        if self.subsets.shape[1] > n_train:
            raise SpecError(f"ground truth subsets index {self.subsets.shape[1]} train samples "
                            f"but the task has {n_train}")
        if self.outputs.shape[1] != n_test:
            raise SpecError(f"ground truth outputs cover {self.outputs.shape[1]} test samples "
                            f"but the task has {n_test}: give an (m, {n_test}) array")

    def membership(self, n_train: int) -> np.ndarray:
        """(m, n_train) booleans."""
        pad = n_train - self.subsets.shape[1]
        return np.pad(self.subsets, ((0, 0), (0, pad))) if pad > 0 else self.subsets

    def to_dict(self) -> dict:
        """What enters artifact keys: a digest of the arrays."""
        h = hashlib.sha256(np.packbits(self.subsets).tobytes())
        h.update(np.ascontiguousarray(self.outputs).tobytes())
        h.update(repr((self.subsets.shape, self.outputs.shape)).encode())
        return {"ground_truth": h.hexdigest()[:24]}
