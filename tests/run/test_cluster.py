"""A simulated multi-node cluster (``ray.cluster_utils.Cluster`` on 127.0.0.1): jobs spread
over nodes, a node removed mid-sweep, the state API, OOM retries on a larger share. It
runs in a subprocess (``cluster_script.py``), since this test session already holds a
Ray runtime of its own; the script asserts inside and exits non-zero on failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

SCRIPT = Path(__file__).with_name("cluster_script.py")


def test_simulated_cluster(tmp_path):
    repo = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [repo, *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("RAY_ADDRESS", None)  # the script starts its own cluster
    res = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True,
                         text=True, env=env, timeout=300)
    assert res.returncode == 0, f"{res.stdout[-3000:]}\n{res.stderr[-6000:]}"
    assert "cluster checks passed" in res.stdout
