"""scikit-learn's bundled 8x8 digits: the embedded default, needs no files."""

from __future__ import annotations

import numpy as np

from raytda.data.base import Dataset, finish


def load_digits(n_train: int, n_test: int, seed: int = 0,
                normalize: tuple[float, float] | None = None) -> Dataset:
    """1797 digits; a fixed 80/20 split (seeded by 0), then ``n_train`` / ``n_test`` of
    them drawn with ``seed``. Pixels scaled to [0, 1], then ``normalize`` (see ``finish``)."""
    from sklearn.datasets import load_digits as _load

    d = _load()
    order = np.random.default_rng(0).permutation(len(d.target))
    cut = int(0.8 * len(order))
    tr, te = order[:cut], order[cut:]
    return finish(d.data[tr], d.target[tr], d.data[te], d.target[te], n_train=n_train,
                  n_test=n_test, seed=seed, scale=16.0, normalize=normalize)
