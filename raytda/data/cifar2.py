"""CIFAR-2 (cat vs dog) from a ``cifar2.npz`` with x_train, y_train, x_test, y_test."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from raytda.data.base import DataError, Dataset, check_pairs, check_shape, finish

KEYS = ("x_train", "y_train", "x_test", "y_test")


def load_cifar2(root: str | Path | None, n_train: int, n_test: int, seed: int = 0,
                normalize: tuple[float, float] | None = None) -> Dataset:
    """Read ``<root>/cifar2.npz`` and draw ``n_train`` / ``n_test`` samples with ``seed``.

    Images HWC uint8 are flattened channel-first and scaled to [0, 1], then normalized when
    ``normalize = (mean, std)`` is set; the built-in ``cifar2-mlp`` uses dattri's
    ``(0.5, 0.5)`` for every channel
    (``raytda.tasks.normalize.PAPER_NORMALIZE["cifar2"]``), which maps pixels to [-1, 1].
    """
    if root is None:
        raise DataError("CIFAR-2 needs a data directory: pass --data-dir DIR holding cifar2.npz")
    path = Path(root).expanduser() / "cifar2.npz"
    if not path.is_file():
        raise DataError(f"{path} not found; the directory must hold cifar2.npz with keys {KEYS}")
    try:
        d = np.load(path)
        if not isinstance(d, np.lib.npyio.NpzFile):
            raise DataError(f"{path} holds a single array, not an .npz archive with {KEYS}")
        with d:
            missing = [k for k in KEYS if k not in d]
            if missing:
                raise DataError(f"{path} lacks arrays {missing}")
            a = {k: d[k] for k in KEYS}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        # Not a zip, a damaged member, or an object array (which would need pickle).
        raise DataError(f"cannot read {path} ({e.__class__.__name__}: {e}); it must be an "
                        f".npz archive of plain arrays {KEYS}") from None
    for split in ("train", "test"):
        check_shape(a[f"x_{split}"], 4, f"{path}[x_{split}]", "images (n, height, width, 3)")
        check_shape(a[f"y_{split}"], 1, f"{path}[y_{split}]", "labels (n,)")
        check_pairs(a[f"x_{split}"], a[f"y_{split}"], f"{path}[x_{split}]", f"{path}[y_{split}]")
    chw = {k: a[k].transpose(0, 3, 1, 2) for k in ("x_train", "x_test")}
    return finish(chw["x_train"], a["y_train"], chw["x_test"], a["y_test"], n_train=n_train,
                  n_test=n_test, seed=seed, scale=255.0, normalize=normalize)
