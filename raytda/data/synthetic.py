"""A tiny Gaussian-blob classification set for unit tests (milliseconds to train)."""

from __future__ import annotations

import numpy as np

from raytda.data.base import Dataset, finish
from raytda.specs import DataSpec

N_FEATURES = 8
N_CLASSES = 3


def load_synthetic(spec: DataSpec) -> Dataset:
    """Blobs around class centres, with enough overlap that samples matter."""
    rng = np.random.default_rng(1000 + spec.seed)
    centres = rng.normal(size=(N_CLASSES, N_FEATURES)) * 1.5
    n = spec.n_train + spec.n_test
    y = rng.integers(0, N_CLASSES, size=n)
    x = centres[y] + rng.normal(size=(n, N_FEATURES))
    return finish(x[: spec.n_train], y[: spec.n_train], x[spec.n_train:], y[spec.n_train:],
                  spec, scale=1.0)
