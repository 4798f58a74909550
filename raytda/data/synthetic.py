"""A tiny Gaussian-blob classification set for unit tests (milliseconds to train)."""

from __future__ import annotations

import numpy as np

from raytda.data.base import Dataset, finish

N_FEATURES = 8
N_CLASSES = 3


def load_synthetic(n_train: int, n_test: int, seed: int = 0) -> Dataset:
    """Blobs around class centres, with enough overlap that samples matter."""
    rng = np.random.default_rng(1000 + seed)
    centres = rng.normal(size=(N_CLASSES, N_FEATURES)) * 1.5
    n = n_train + n_test
    y = rng.integers(0, N_CLASSES, size=n)
    x = centres[y] + rng.normal(size=(n, N_FEATURES))
    return finish(x[:n_train], y[:n_train], x[n_train:], y[n_train:], n_train=n_train,
                  n_test=n_test, seed=seed, scale=1.0)
