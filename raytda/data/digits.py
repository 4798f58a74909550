"""scikit-learn's bundled 8x8 digits: the embedded default, needs no files."""

from __future__ import annotations

import numpy as np

from raytda.data.base import Dataset, finish
from raytda.specs import DataSpec


def load_digits(spec: DataSpec) -> Dataset:
    """1797 digits; a fixed 80/20 split (seeded by 0) then the spec's sampling."""
    from sklearn.datasets import load_digits as _load

    d = _load()
    order = np.random.default_rng(0).permutation(len(d.target))
    cut = int(0.8 * len(order))
    tr, te = order[:cut], order[cut:]
    return finish(d.data[tr], d.target[tr], d.data[te], d.target[te], spec, scale=16.0)
