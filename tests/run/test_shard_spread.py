"""Spread featurization: one member's train-shard jobs run on different actors of a
simulated two-node cluster and give the scores of one actor. It runs in a subprocess
(``shard_spread_script.py``), since this test session already holds a Ray runtime of its
own; the script asserts inside and exits non-zero on failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

SCRIPT = Path(__file__).with_name("shard_spread_script.py")


def test_shards_of_one_member_run_on_both_nodes(tmp_path):
    pytest.importorskip("ray")
    repo = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [repo, *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("RAY_ADDRESS", None)  # the script starts its own cluster
    env.setdefault("RAY_worker_niceness", "0")  # as tests/conftest.py sets for the session
    res = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True,
                         text=True, env=env, timeout=300)
    assert res.returncode == 0, f"{res.stdout[-3000:]}\n{res.stderr[-6000:]}"
    assert "spread checks passed" in res.stdout
