"""MNIST from the four standard IDX files (optionally gzipped) in a directory."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from raytda.data.base import DataError, Dataset, check_pairs, check_shape, finish

FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (big-endian header: magic, dims; then uint8 payload)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"cannot read {path} ({e.__class__.__name__}: {e}); replace it with "
                        f"an intact copy of the MNIST file") from None
    if len(raw) < 8 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: header says {dims} but payload has "
                        f"{len(raw) - offset} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def find(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (root / name).is_file():
            return root / name
    raise DataError(f"MNIST file {stem}[.gz] not found in {root}; the directory must hold "
                    f"the four IDX files {sorted(FILES.values())} (gzipped or not)")


def load_mnist(root: str | Path | None, n_train: int, n_test: int, seed: int = 0,
               normalize: tuple[float, float] | None = None) -> Dataset:
    """Read MNIST from directory ``root`` and draw ``n_train`` / ``n_test`` samples with
    ``seed``.

    Pixels are divided by 255 and, when ``normalize = (mean, std)`` is set, normalized; the
    built-in ``mnist-mlp`` uses dattri's ``(0.1307, 0.3081)``
    (``raytda.tasks.normalize.PAPER_NORMALIZE["mnist"]``), so the background pixel is -0.4242.
    """
    if root is None:
        raise DataError("MNIST needs a data directory: pass --data-dir DIR pointing at the "
                        "four IDX files")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"MNIST data directory {root} does not exist")
    paths = {k: find(root, stem) for k, stem in FILES.items()}
    a = {k: read_idx(p) for k, p in paths.items()}
    for split in ("train", "test"):
        x, y = f"x_{split}", f"y_{split}"
        check_shape(a[x], 3, paths[x], "images (n, rows, columns)")
        check_shape(a[y], 1, paths[y], "labels (n,)")
        check_pairs(a[x], a[y], paths[x], paths[y])
    return finish(a["x_train"], a["y_train"], a["x_test"], a["y_test"], n_train=n_train,
                  n_test=n_test, seed=seed, scale=255.0, normalize=normalize)
