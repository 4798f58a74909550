"""Leases: one holder at a time, taken over once the holder is gone, and two sweeps on
one store compute every artifact once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import tiny_task
import torch

from raytda.store import ArtifactStore
from raytda.store.holders import host_tag
from raytda.store.lease import claim, live_leases, read_lease, try_acquire


def _dead_pid() -> int:
    out = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                         capture_output=True, text=True, check=True)
    return int(out.stdout)


def _write_lease(store: ArtifactStore, key: str, host: str, pid: int, expires: float) -> None:
    path = Path(store.lease_path(key))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": host, "pid": pid, "token": "t", "expires": expires}))


def test_one_holder_at_a_time(tmp_path):
    store = ArtifactStore(str(tmp_path))
    first = try_acquire(store, "model-a")
    assert first is not None and try_acquire(store, "model-a") is None
    assert [k for k, _ in live_leases(store)] == ["model-a"]
    first.release()
    assert read_lease(store, "model-a") is None
    again = try_acquire(store, "model-a")
    assert again is not None
    again.release()


def test_a_dead_holders_lease_is_taken_over(tmp_path):
    store = ArtifactStore(str(tmp_path))
    _write_lease(store, "model-a", host_tag(), _dead_pid(), time.time() + 3600)
    lease = try_acquire(store, "model-a")  # not yet expired, but its process is gone
    assert lease is not None
    lease.release()


def test_another_hosts_lease_holds_until_it_expires(tmp_path):
    store = ArtifactStore(str(tmp_path))
    other = "0" * 8 if host_tag() != "0" * 8 else "1" * 8
    _write_lease(store, "model-a", other, 1, time.time() + 3600)
    assert try_acquire(store, "model-a") is None  # pid 1 there says nothing here
    _write_lease(store, "model-a", other, 1, time.time() - 1)
    lease = try_acquire(store, "model-a")
    assert lease is not None
    lease.release()


def test_a_waiter_gets_the_holders_artifact_instead_of_computing_it(tmp_path):
    store = ArtifactStore(str(tmp_path))
    held = try_acquire(store, "q-a")
    assert held is not None

    def holder():  # another sweep: computes, writes, lets go
        time.sleep(0.3)
        store.put("q-a", {"q": torch.ones(2)}, {})
        held.release()

    t = threading.Thread(target=holder)
    t.start()
    got = claim(store, "q-a", lambda: store.has("q-a"), poll_s=0.05)
    t.join()
    assert got is None and store.has("q-a")  # nothing left to compute


SWEEP = """
import os, sys, time
import torch
torch.set_num_threads(1)
from raytda.store import artifacts
import tiny_task
log, store, me, other = sys.argv[1:5]
real = artifacts.ArtifactStore.put
def put(self, key, *a, **k):
    real(self, key, *a, **k)
    with open(log, "a") as f:
        f.write(key + "\\n")
artifacts.ArtifactStore.put = put
open(me, "w").close()
while not os.path.exists(other):  # start both sweeps together
    time.sleep(0.01)
df = tiny_task.sweep(store).run()
df[["label", "lds"]].to_csv(me + ".csv", index=False)
"""


def test_two_concurrent_sweeps_compute_each_artifact_once(tmp_path):
    store = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(tiny_task.__file__).parent), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", SWEEP, str(tmp_path / f"puts{i}"),
                               str(store), str(tmp_path / f"ready{i}"),
                               str(tmp_path / f"ready{1 - i}")], env=env,
                              stderr=subprocess.PIPE, text=True) for i in (0, 1)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    puts = Counter(line for i in (0, 1) if (tmp_path / f"puts{i}").exists()
                   for line in (tmp_path / f"puts{i}").read_text().split())
    assert puts and set(puts.values()) == {1}, puts.most_common(3)
    assert sorted(puts) == ArtifactStore(str(store)).keys()
    a, b = (pd.read_csv(tmp_path / f"ready{i}.csv") for i in (0, 1))
    assert a.equals(b)  # both report the same, though each computed part of it
