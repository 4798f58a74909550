"""A local Ray head started with `ray start`, as users start one, for the benchmarks.

Token authentication is on (Ray 2.60's default for `ray start`), the token lives in a
temporary file, HOME is a temporary directory and every address is 127.0.0.1, so nothing
outside this machine or this benchmark is joined. ``ray start --block`` keeps the cluster
in one process tree, which is stopped as a whole afterwards.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Head:
    address: str  # host:port of the GCS, what `raytda sweep --address` takes
    env: dict[str, str]  # a client's environment: token auth on, this cluster's token


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@contextmanager
def ray_head(num_cpus: int, num_gpus: int = 0, dashboard: bool = False) -> Iterator[Head]:
    """A head node with ``num_cpus`` logical CPUs; stopped (with its workers) on exit.
    ``dashboard``: with Ray's dashboard on (``ray start``'s default), on 127.0.0.1."""
    import psutil

    root = Path(tempfile.mkdtemp(prefix="rtbench-", dir="/tmp"))  # short: socket paths
    (root / "home").mkdir()
    token = root / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {**os.environ, "HOME": str(root / "home"), "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN_PATH": str(token), "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH"))
                                         if p)}
    for var in ("RAY_ADDRESS", "RAY_AUTH_TOKEN"):
        env.pop(var, None)
    gcs, client, agent, agent_grpc, metrics, renv, node_mgr, obj_mgr, dash = _free_ports(9)
    ui = (["--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}"]
          if dashboard else ["--include-dashboard=false"])
    cmd = ["ray", "start", "--head", "--block", f"--port={gcs}", "--node-ip-address=127.0.0.1",
           f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}", *ui,
           f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
           f"--dashboard-agent-grpc-port={agent_grpc}", f"--metrics-export-port={metrics}",
           f"--runtime-env-agent-port={renv}", f"--node-manager-port={node_mgr}",
           f"--object-manager-port={obj_mgr}", "--object-store-memory=200000000",
           f"--temp-dir={root / 'ray'}", "--disable-usage-stats"]
    log = open(root / "ray-start.log", "w")
    head = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:  # up once `ray status` answers with this token
            if head.poll() is not None:
                raise RuntimeError("ray start exited:\n" + (root / "ray-start.log").read_text())
            ok = subprocess.run(["ray", "status", f"--address=127.0.0.1:{gcs}"], env=env,
                                capture_output=True, timeout=60).returncode == 0
            if ok:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the head did not come up in 90 s")
            time.sleep(1)
        yield Head(f"127.0.0.1:{gcs}", env)
    finally:
        procs = []
        try:
            procs = [psutil.Process(head.pid), *psutil.Process(head.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
        if head.poll() is None:
            head.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(procs, timeout=15)
        for p in alive:
            p.kill()
        log.close()
        shutil.rmtree(root, ignore_errors=True)
