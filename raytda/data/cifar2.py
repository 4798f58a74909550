"""CIFAR-2 (cat vs dog) from a ``cifar2.npz`` with x_train, y_train, x_test, y_test."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from raytda.data.base import DataError, Dataset, finish
from raytda.specs import DataSpec

KEYS = ("x_train", "y_train", "x_test", "y_test")


def load_cifar2(spec: DataSpec) -> Dataset:
    """Images HWC uint8 are flattened channel-first and scaled to [0, 1].

    Then normalized when ``spec.normalize`` is set; the registered ``cifar2-mlp`` setting
    uses dattri's ``(0.5, 0.5)`` for every channel (``raytda.specs.PAPER_NORMALIZE["cifar2"]``),
    which maps pixels to [-1, 1].
    """
    if spec.root is None:
        raise DataError("CIFAR-2 needs a data directory: pass --data-dir DIR holding cifar2.npz")
    path = Path(spec.root).expanduser() / "cifar2.npz"
    if not path.is_file():
        raise DataError(f"{path} not found; the directory must hold cifar2.npz with keys {KEYS}")
    with np.load(path) as d:
        missing = [k for k in KEYS if k not in d]
        if missing:
            raise DataError(f"{path} lacks arrays {missing}")
        a = {k: d[k] for k in KEYS}
    chw = {k: a[k].transpose(0, 3, 1, 2) for k in ("x_train", "x_test")}
    return finish(chw["x_train"], a["y_train"], chw["x_test"], a["y_test"], spec, scale=255.0)
