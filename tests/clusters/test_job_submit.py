"""The `ray job submit` line of clusters/README.md against a real local cluster.

A head node is started with `ray start` exactly as on a cluster (token authentication on,
dashboard and job API on 127.0.0.1, free ports only), the repository is shipped with
`--working-dir`, `raytda sweep` runs as a Ray job, and the job's state, its log (through
`ray job logs`) and its output files are checked.

Nothing touches the real home directory: HOME is a temporary directory and the token lives
in a temporary file named by RAY_AUTH_TOKEN_PATH. The cluster is always torn down, but not
with `ray stop`: that kills every Ray process on the machine, including other sessions'.
Instead `ray start --block` keeps the whole cluster in one process tree, and the
finalizer stops that tree (and anything else that names this cluster's temp directory) by
process id.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.ray

# The README's command with a small sweep, with `python -m raytda.cli` standing for the
# `raytda` console script (the job runs the shipped checkout, not an installed copy).
SWEEP = ["sweep", "--executor", "ray", "--setting", "toy-mlp", "--ensemble", "naive:I=1",
         "--lds-m", "3", "--proj-dim", "8", "--quiet"]


def free_ports(n: int) -> list[int]:
    """n distinct localhost ports that were free a moment ago (all bound at once, so the
    kernel cannot hand out the same one twice)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Cluster:
    dashboard: str  # http://127.0.0.1:PORT, what `ray job ... --address` takes
    env: dict[str, str]  # the environment every client of this cluster runs with
    root: Path  # temporary directory of this cluster (home, token, Ray's temp dir)

    def ray(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(["ray", *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, cwd=REPO)


def _alive_tree(pid: int) -> list:
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _stop(head: subprocess.Popen, marker: str, known: list) -> None:
    """Stop this cluster's processes only: the `ray start --block` tree, plus any process
    whose command line names this cluster's temp directory (Ray passes it to everything it
    starts, so workers that left the tree are found too)."""
    import psutil

    procs = {p.pid: p for p in known + _alive_tree(head.pid)}
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in part for part in (p.info["cmdline"] or [])):
                procs.setdefault(p.pid, p)
        except psutil.Error:
            pass
    procs.pop(os.getpid(), None)
    if head.poll() is None:
        head.send_signal(signal.SIGTERM)  # `ray start --block` shuts its processes down
    _, alive = psutil.wait_procs(list(procs.values()), timeout=10)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    if head.poll() is None:
        head.kill()
        head.wait(timeout=5)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if shutil.which("ray") is None:
        pytest.skip("the `ray` command-line tool is not installed")
    pytest.importorskip("psutil")
    # A short path: Ray's socket files live under --temp-dir and unix socket paths are
    # limited to ~107 bytes.
    root = Path(tempfile.mkdtemp(prefix="rtjob-", dir="/tmp"))
    (root / "home").mkdir()
    token = root / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {**os.environ, "HOME": str(root / "home"), "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN_PATH": str(token), "RAY_USAGE_STATS_ENABLED": "0",
           # Processes of this cluster import this checkout, like the test itself.
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH"))
                                         if p)}
    for var in ("RAY_ADDRESS", "RAY_AUTH_TOKEN"):  # never join or authenticate elsewhere
        env.pop(var, None)
    (gcs, dash, client, agent, agent_grpc, metrics, renv, node_mgr, obj_mgr) = free_ports(9)
    cmd = ["ray", "start", "--head", "--block", f"--port={gcs}", "--node-ip-address=127.0.0.1",
           "--num-cpus=2", "--num-gpus=0", "--include-dashboard=true",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
           f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
           f"--dashboard-agent-grpc-port={agent_grpc}", f"--metrics-export-port={metrics}",
           f"--runtime-env-agent-port={renv}", f"--node-manager-port={node_mgr}",
           f"--object-manager-port={obj_mgr}", "--object-store-memory=200000000",
           f"--temp-dir={root / 'ray'}", "--disable-usage-stats"]
    log = open(root / "ray-start.log", "w")  # closed in the finalizer
    head = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root,
                            start_new_session=True)
    known: list = []
    try:
        url = f"http://127.0.0.1:{dash}"
        deadline = time.monotonic() + 60
        while True:  # the job API answers once the head is up
            if head.poll() is not None:
                pytest.fail(f"ray start exited with {head.returncode}:\n"
                            + (root / "ray-start.log").read_text()[-3000:])
            req = urllib.request.Request(f"{url}/api/version",
                                         headers={"Authorization": f"Bearer {token.read_text()}"})
            try:
                with urllib.request.urlopen(req, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the dashboard did not answer within 60 s:\n"
                            + (root / "ray-start.log").read_text()[-3000:])
            time.sleep(0.5)
        known = _alive_tree(head.pid)
        yield Cluster(url, env, root)
    finally:
        _stop(head, str(root), known)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def test_readme_shows_the_tested_command():
    """The line tested below is the one clusters/README.md tells users to type."""
    text = (REPO / "clusters" / "README.md").read_text()
    assert "ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\" in text
    assert "raytda sweep --executor ray" in text
    assert "export RAY_AUTH_MODE=token" in text


def test_job_submit_runs_a_sweep(cluster: Cluster, tmp_path):
    out = tmp_path / "out"
    submission = f"raytda-test-{secrets.token_hex(4)}"
    # Without --no-wait, `ray job submit` follows the job and exits non-zero if it fails.
    done = cluster.ray("job", "submit", "--address", cluster.dashboard, "--working-dir", ".",
                       "--submission-id", submission, "--",
                       "python", "-m", "raytda.cli", *SWEEP,
                       "--out", str(out), "--store", str(tmp_path / "store"), timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout, done.stdout[-3000:]

    status = cluster.ray("job", "status", "--address", cluster.dashboard, submission)
    assert status.returncode == 0 and f"Job '{submission}' succeeded" in status.stdout, \
        status.stdout + status.stderr
    logs = cluster.ray("job", "logs", "--address", cluster.dashboard, submission)
    assert logs.returncode == 0, logs.stderr
    assert "naive I=1" in logs.stdout and "1 configurations in" in logs.stdout, logs.stdout
    assert (out / "results.parquet").is_file()


def test_job_api_demands_the_token(cluster: Cluster):
    """Token auth is really on: the same client without the token is refused."""
    env = {k: v for k, v in cluster.env.items() if k != "RAY_AUTH_TOKEN_PATH"}
    done = subprocess.run(["ray", "job", "list", "--address", cluster.dashboard], env=env,
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode != 0
    assert "401" in done.stdout + done.stderr or "token" in (done.stdout + done.stderr).lower()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
