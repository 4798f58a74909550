"""Helpers of the tests where several sweeps share one store: a sweep process that logs
every artifact it writes, and another sweep's lease held from a process of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import ray_helpers

from raytda.plan.job import Job

# One sweep process (the executor tests' toy-mlp sweep, in-process, one torch thread):
# logs each artifact it writes, waits for its partner to be ready, runs, then saves its
# results table and every configuration's scores.
SWEEP_PROCESS = """
import os, sys, time
import torch
torch.set_num_threads(1)
from raytda.store import artifacts
from ray_helpers import make_sweep
puts, store, me, partner = sys.argv[1:5]
real = artifacts.ArtifactStore.put
def put(self, key, *a, **k):
    real(self, key, *a, **k)
    with open(puts, "a") as f:
        f.write(key + "\\n")
artifacts.ArtifactStore.put = put
sweep = make_sweep(store, "--executor", "local")
open(me, "w").close()
while not os.path.exists(partner):  # both sweeps start together
    time.sleep(0.01)
df = sweep.run()
df.to_pickle(me + ".results.pkl")
torch.save({label: sweep.scores(label) for label in df["label"]}, me + ".scores.pt")
"""


def sweep_process(tmp_path: Path, store: Path, me: str, partner: str) -> subprocess.Popen:
    """Start one sweep process on ``store``; it starts running once ``partner`` is ready.
    Writes ``<me>.puts`` (keys it wrote), ``<me>.results.pkl`` and ``<me>.scores.pt``."""
    here = str(Path(ray_helpers.__file__).parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", SWEEP_PROCESS, str(tmp_path / f"{me}.puts"),
                             str(store), str(tmp_path / me), str(tmp_path / partner)],
                            env=env, stderr=subprocess.PIPE, text=True)


# Another sweep holding one job's lease: it holds it until every job that does not need
# that one is in the store (or a deadline passes), then says which it saw, and lets go.
HOLDER = """
import json, sys, time
from raytda.store import ArtifactStore
from raytda.store.lease import try_acquire
root, key, others, out, deadline = sys.argv[1:6]
store = ArtifactStore(root)
lease = try_acquire(store, key)
assert lease is not None, "the lease was taken"
open(out + ".held", "w").close()
others = json.loads(others)
end = time.time() + float(deadline)
while time.time() < end and not all(store.has(k) for k in others):
    time.sleep(0.1)
missing = [k for k in others if not store.has(k)]
built = store.has(key)
lease.release()
with open(out, "w") as f:
    json.dump({"missing": missing, "built_while_held": built}, f)
"""


def independent_of(held: Job, jobs: list[Job]) -> list[str]:
    """Keys of ``jobs`` that need ``held`` neither directly nor through another job."""
    def needs(job: Job) -> bool:
        return any(d.key == held.key or needs(d) for d in job.deps())
    return [j.key for j in jobs if j.key != held.key and not needs(j)]


def hold_lease(store: Path, key: str, others: list[str], out: Path,
               deadline_s: float) -> subprocess.Popen:
    """Hold ``key``'s lease from another process until ``others`` are all in ``store``
    (at most ``deadline_s``); returns once it holds it. ``out`` gets what it saw."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(store), key, json.dumps(others),
                             str(out), str(deadline_s)], stderr=subprocess.PIPE, text=True)
    while not Path(str(out) + ".held").exists():
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read())
        time.sleep(0.05)
    return proc
