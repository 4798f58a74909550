"""Deploying a finished configuration on Ray Serve, and taking it down again.

:func:`deploy` joins Ray (a new local runtime unless an address is given), starts Serve's
HTTP proxy on ``host:port`` (unless Serve already runs on that cluster, listening there),
deploys :class:`~raytda.serving.replica.AttributorDeployment` under ``route_prefix``,
waits until the route answers, and returns a :class:`Served`, whose ``shutdown`` undoes
exactly what ``deploy`` started: its application, Serve if it started it, Ray likewise.

Serve needs no dashboard: ``serve.run`` talks to the Serve controller directly, so Ray is
started without one (as the sweep's Ray executor starts it). The dashboard and its agent
are needed only for Serve's REST/YAML deployments (``serve deploy``), not used here.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from raytda.specs import SpecError

if TYPE_CHECKING:
    from ray.serve.handle import DeploymentHandle

    from raytda.api import Sweep
    from raytda.ensembles import Ensemble
    from raytda.methods import Method
    from raytda.task import Task

DEFAULT_PORT = 8000
DEFAULT_MAX_BATCH_SIZE = 32
DEFAULT_BATCH_WAIT_MS = 5.0
DEFAULT_MAX_BODY_BYTES = 64 << 20
READY_TIMEOUT_S = 60.0


@dataclass
class Served:
    """A running deployment: its ``url`` (POST requests there, GET describes it), the
    Serve application ``name`` and a ``handle`` to its ingress deployment."""

    url: str
    name: str
    handle: DeploymentHandle
    started_serve: bool
    started_ray: bool

    def info(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """The deployment's description (configuration, n_train, input shape, ...)."""
        with urllib.request.urlopen(self.url, timeout=timeout_s) as r:
            return json.loads(r.read())

    def shutdown(self) -> None:
        """Delete the application; stop Serve and Ray if :func:`deploy` started them."""
        _take_down(self.name, True, self.started_serve, self.started_ray)


def _take_down(name: str, app_up: bool, started_serve: bool, started_ray: bool) -> None:
    from ray import serve

    try:
        if started_serve:
            serve.shutdown()
        elif app_up:
            serve.delete(name)
    finally:
        if started_ray:
            import ray

            ray.shutdown()


def _probe_host(host: str) -> str:
    # A proxy bound to every interface is reachable on loopback from this machine.
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def _url(host: str, port: int, route_prefix: str) -> str:
    h = f"[{host}]" if ":" in host else host
    return f"http://{h}:{port}{route_prefix}"


def _check_port_free(host: str, port: int) -> None:
    """A taken port would fail inside Serve's proxy actor, far from the user (Serve
    raises there); say so here, at once, in one line."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise SpecError(f"cannot listen on {host}:{port} ({e.strerror or e}): choose "
                            f"another --port or --host") from None


def _answers(url: str, timeout_s: float = 2.0) -> bool:
    """Whether an HTTP server answers at ``url`` (any status: the proxy is up)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def _wait_ready(url: str, timeout_s: float) -> None:
    """Until GET ``url`` answers 200 (the route is up and a replica answered)."""
    end = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=5.0) as r:
                if r.status == 200:
                    return
                last = f"status {r.status}"
        except urllib.error.HTTPError as e:
            last = f"status {e.code}"
        except OSError as e:
            last = " ".join(str(e).split()) or type(e).__name__
        time.sleep(0.2)
    raise ConnectionError(f"the deployment did not answer at {url} within {timeout_s:.0f} s "
                          f"({last})")


def _check_options(replicas: int, max_batch_size: int, batch_wait_ms: float, port: int,
                   route_prefix: str, cpus_per_replica: float) -> None:
    for ok, what in (
        (replicas >= 1, f"replicas must be >= 1, got {replicas}"),
        (max_batch_size >= 1, f"max batch size must be >= 1 (inputs per scoring call), "
                              f"got {max_batch_size}"),
        (batch_wait_ms >= 0, f"batch wait must be >= 0 ms, got {batch_wait_ms}"),
        (1 <= port <= 65535, f"port must be in 1..65535, got {port}"),
        (route_prefix.startswith("/"), f"route prefix must start with '/', got "
                                       f"{route_prefix!r}"),
        (cpus_per_replica > 0, f"CPUs per replica must be > 0, got {cpus_per_replica}"),
    ):
        if not ok:
            raise SpecError(what)


def _deploy_error(e: Exception) -> Exception:
    """serve.run's failure as one line: a replica's SpecError as such (the user's
    mistake, e.g. a store that lost artifacts), anything else as a RuntimeError."""
    text = str(e)
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(("raytda.specs.SpecError: ", "SpecError: ")):
            return SpecError(line.split("SpecError: ", 1)[1])
    last = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return RuntimeError(f"the deployment failed to start: {last[-1] if last else e!r}")


def deploy(sweep: Sweep, ensemble: str | Ensemble, method: str | Method | None = None,
           task: str | Task | None = None, *, host: str = "127.0.0.1",
           port: int = DEFAULT_PORT, replicas: int = 1,
           max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
           batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS, device: str | None = None,
           memory_bytes: int | None = None, cpus_per_replica: float = 1.0,
           gpus_per_replica: float | None = None, address: str | None = None,
           name: str = "raytda", route_prefix: str = "/",
           max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
           ready_timeout_s: float = READY_TIMEOUT_S) -> Served:
    """Serve one finished configuration of ``sweep`` (named as ``Sweep.scores`` names it)
    over HTTP at ``http://host:port/route_prefix``; returns once it answers.

    ``device`` defaults to the sweep's compute device and ``memory_bytes`` (the
    Attributor's budget for resident projections, per replica) to the Attributor's; on a
    CUDA device each replica reserves ``gpus_per_replica`` GPUs (default 1).
    ``max_batch_size`` is the most inputs one scoring call (and one request) holds; a
    batch waits up to ``batch_wait_ms`` to fill. Each replica loads the stored train side
    itself (see :mod:`raytda.serving.replica`). ``address`` joins a Ray cluster (default:
    ``RAY_ADDRESS``, else a new local runtime); a process already connected to Ray stays
    on its cluster.
    """
    from raytda.attributor import DEFAULT_MEMORY_BYTES
    from raytda.run.connect import join_ray, probe_address
    from raytda.run.policy import ship_task_code

    _check_options(replicas, max_batch_size, batch_wait_ms, port, route_prefix,
                   cpus_per_replica)
    ev = sweep.evaluation(ensemble, method, task)
    if not type(ev.method.impl).serves_new_inputs:
        raise SpecError(f"method {ev.method.name!r} cannot attribute new inputs: only "
                        f"methods that store a member's train side (TRAK) can be served")
    if not sweep.store.has(ev.key):
        raise SpecError(f"{ev.describe()} has not run in store {sweep.store.uri}: run its "
                        f"sweep first, and name it with the same flags or --config (LDS "
                        f"settings included) as that sweep")
    compute = sweep.compute
    device = device or compute.device
    memory_bytes = DEFAULT_MEMORY_BYTES if memory_bytes is None else memory_bytes
    on_gpu = device.startswith("cuda")
    gpus = (1.0 if gpus_per_replica is None else gpus_per_replica) if on_gpu else 0.0

    try:
        from ray import serve
    except ImportError as e:
        raise SpecError(f"Ray Serve is not installed ({e}): pip install 'raytda[serve]'"
                        ) from None
    import ray

    started_ray = False
    if not ray.is_initialized():
        target = address or os.environ.get("RAY_ADDRESS") or "local"
        probe_address(target)
        # "local": a runtime of our own, never a stranger's `ray start` found on this host
        started_ray = join_ray(target, {}, None)
    started_serve = app_up = False
    try:
        from raytda.run.node_paths import check_paths_on_nodes, data_paths, store_path

        # Replicas may land on any node: each must read the store (and the task's data).
        check_paths_on_nodes(store_path(sweep.store.uri, must_exist=True)
                             + data_paths([ev.task]))
        from raytda.serving.replica import AttributorDeployment

        # A Task class from the user's script travels by value (workers cannot import it).
        ship_task_code(SimpleNamespace(jobs=[ev]))
        url = _url(host, port, route_prefix)
        probe = _url(_probe_host(host), port, route_prefix)
        started_serve = not serve.status().proxies
        if started_serve:
            _check_port_free(host, port)
            serve.start(http_options={"host": host, "port": port})
        elif not _answers(_url(_probe_host(host), port, "/-/routes")):
            raise SpecError(f"Ray Serve already runs on this Ray cluster and does not listen "
                            f"on {host}:{port}: give the port it listens on, or stop it "
                            f"(`serve shutdown`)")
        app = AttributorDeployment.options(
            num_replicas=replicas,
            ray_actor_options={"num_cpus": cpus_per_replica, "num_gpus": gpus},
            # room for a batch being scored and the next one filling
            max_ongoing_requests=2 * max_batch_size,
        ).bind(sweep.store.uri, ev, device, memory_bytes, compute, max_batch_size,
               batch_wait_ms / 1000.0, max_body_bytes, max(1, round(cpus_per_replica)))
        app_up = True
        try:
            handle = serve.run(app, name=name, route_prefix=route_prefix)
        except RuntimeError as e:
            raise _deploy_error(e) from None
        _wait_ready(probe, ready_timeout_s)
        return Served(url, name, handle, started_serve, started_ray)
    except BaseException:
        # Ctrl-C or a failure mid-way: leave nothing running that this call started.
        _take_down(name, app_up, started_serve, started_ray)
        raise
