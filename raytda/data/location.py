"""Where a data set's files live, resolved the same way on a laptop and on a cluster node.

Scripts copied elsewhere (``ray submit`` puts them in the head's home directory, ``ray job
submit --working-dir`` in a temporary directory) must not look for data relative to their
own location. The order, first match wins:

1. the directory given on the command line (``--data-dir DIR``), used as is;
2. ``$RAYTDA_DATA/<name>`` when the ``RAYTDA_DATA`` environment variable is set;
3. ``~/raytda-data/<name>`` (the cluster configs in ``clusters/`` ship ``~/raytda-data``
   to every node with ``file_mounts``, so the same path works on all of them).
"""

from __future__ import annotations

import os
from pathlib import Path

from raytda.data.base import DataError

ENV_VAR = "RAYTDA_DATA"
DEFAULT_ROOT = Path("~/raytda-data")

def data_dir(name: str, given: str | None) -> Path:
    """The existing directory of data set ``name``; raises DataError (one line) if missing.

    The returned path is absolute with ``~`` expanded, so a spec built from it means the
    same directory on every node whose user has the same home (true for the Docker-based
    cluster configs and for on-prem hosts with one account).
    """
    if given:
        path, origin = Path(given), "--data-dir"
    elif os.environ.get(ENV_VAR):
        path, origin = Path(os.environ[ENV_VAR]) / name, f"${ENV_VAR}/{name}"
    else:
        path, origin = DEFAULT_ROOT / name, f"the default ~/raytda-data/{name}"
    path = path.expanduser().resolve()
    if not path.is_dir():
        raise DataError(f"{name} data directory {path} (from {origin}) does not exist; pass "
                        f"--data-dir DIR or set {ENV_VAR} to a directory holding {name}/")
    return path


def optional_data_dir(name: str, given: str | None) -> Path | None:
    """``data_dir(name, given)``; for data that needs no files (``name`` empty, as a
    built-in Task's ``DATA_NAME`` says), the given directory resolved, or None."""
    if not name:
        return Path(given).expanduser().resolve() if given else None
    return data_dir(name, given)
