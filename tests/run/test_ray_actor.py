"""A full disk under Ray: one StoreError line on the driver, no job retried, no temp file
left behind (a retried OSError used to leave one per attempt)."""

from __future__ import annotations

import errno
import sys
from collections import Counter
from pathlib import Path

import pytest
from ray_helpers import make_sweep

from raytda.plan.planner import make_plan
from raytda.run.ray_executor import RayExecutor
from raytda.store import ArtifactStore, StoreError

pytestmark = pytest.mark.ray


class _FullStream:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, blob):
        raise OSError(errno.ENOSPC, "No space left on device")


class FullDisk(ArtifactStore):
    """A store on a full disk: every artifact write fails with ENOSPC after creating its
    temp file; each attempt is logged next to the store (workers share the filesystem)."""

    def _open_output(self, path: str):
        target = path.split(".tmp-")[0]
        if target.endswith((".st", ".json")):
            with open(self.root + ".writes", "a") as f:
                f.write(target + "\n")
        super()._open_output(path).close()
        return _FullStream()


def test_full_disk_stops_the_sweep_with_one_line(ray_session, tmp_path):
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import it
    root = tmp_path / "store"
    store = FullDisk(str(root))
    plan = make_plan(make_sweep(root).spec, store)
    with pytest.raises(StoreError, match="is full") as err:
        RayExecutor(progress=False, shutdown=False).execute(plan, store)
    assert "\n" not in str(err.value)
    attempts = Counter(Path(f"{root}.writes").read_text().split())
    assert attempts and set(attempts.values()) == {1}  # never retried
    assert not [p for p in root.rglob("*") if p.is_file()]
