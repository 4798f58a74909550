"""The Ray executor: a plan's jobs as Ray tasks, dependency-aware, with retries and repair.

The driver keeps the DAG: a job is submitted once all its inputs exist, at most
``max_in_flight`` tasks are outstanding, and results stream back through ``ray.wait``.
Workers share nothing but the artifact store (pickled by URI), so a task's only output is
a small status dict; tensors never travel through the object store.

Failure handling, from cheapest to most drastic:

* a worker process that dies (OOM, preemption, ``kill -9``) is retried by Ray itself
  (``max_retries``), as are transient ``OSError``s (store on a flaky network filesystem);
* a task whose input turns out truncated or corrupt (``CorruptArtifact``, or missing
  altogether) reports the input's key instead of failing; the driver reruns the producer
  (and, recursively, whatever the producer itself lacks), then the consumer;
* a task that still fails marks its dependents as blocked; independent jobs go on, so
  the store keeps every artifact that could be built, and the sweep raises at the end;
* a driver that is killed loses nothing: every finished artifact is in the store, and a
  rerun plans only what is missing.

Ray is imported here and in :mod:`raytda.run.tune` only, never by ``import raytda``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from raytda.core.args import ComputeArgs
from raytda.plan.jobs import Job
from raytda.plan.planner import Plan
from raytda.run.local import JobFailed
from raytda.store import ArtifactStore, CorruptArtifact

log = logging.getLogger(__name__)

# Kinds that do torch compute per sample and so benefit from an accelerator; 'result'
# (aggregation + LDS) is cheap numpy work that would only hold a GPU share idle.
GPU_KINDS = frozenset({"model", "basemodel", "adapter", "ldsmodel", "q", "block"})

# Errors worth retrying in place: network filesystems, object stores, sockets.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OSError,)

GpuPolicy = float | Callable[[Job], float] | None



def model_params(job: Job) -> int:
    """Parameter count of the job's model, from an unallocated (meta-device) instance."""
    import torch

    with torch.device("meta"):
        return sum(p.numel() for p in job.task.build_model().parameters())


def default_gpu_share(job: Job) -> float:
    """Quarter of a GPU for small models (4 jobs share a device), a whole one otherwise."""
    if job.kind not in GPU_KINDS:
        return 0.0
    return 0.25 if model_params(job) < 5_000_000 else 1.0


# --------------------------------------------------------------------------- connection


def _host_port(address: str) -> tuple[str, int] | None:
    rest = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def probe_address(address: str, timeout_s: float = 5.0) -> None:
    """Raise a one-line ``ConnectionError`` unless ``address`` accepts TCP connections.

    ``ray.init`` retries an unreachable GCS for a long time; a plain socket tells in
    milliseconds (refused) or ``timeout_s`` (filtered) whether anything listens there.
    """
    if address in ("auto", "local"):
        return
    if address.startswith(("http://", "https://")):
        raise ConnectionError(
            f"{address} looks like a dashboard URL (used by `ray job submit`); --address "
            "needs the cluster's GCS address host:6379 or a Ray client address ray://host:10001")
    hp = _host_port(address)
    if hp is None:
        raise ConnectionError(f"cannot parse Ray address {address!r}; use host:port (GCS, "
                              "usually port 6379), ray://host:10001 or 'auto'")
    try:
        with socket.create_connection(hp, timeout=timeout_s):
            pass
    except OSError as e:
        why = e.strerror or e.__class__.__name__
        raise ConnectionError(
            f"cannot reach a Ray cluster at {address} ({why}); start one with "
            "`ray start --head` or fix --address / RAY_ADDRESS") from None


def _enable_token_auth_if_token_given() -> None:
    """Turn on Ray token auth when the user handed us a token explicitly.

    Ray enables token auth on its own only for clusters it starts or finds locally; for an
    explicit address it waits for RAY_AUTH_MODE=token. A RAY_AUTH_TOKEN or
    RAY_AUTH_TOKEN_PATH in the environment is a deliberate choice of credentials for the
    cluster we are about to join, so we honor it instead of failing after a 20 s timeout.
    """
    if os.environ.get("RAY_AUTH_MODE") is not None:
        return
    if not (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")):
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    try:  # Ray caches its config at import; refresh it the way Ray itself does
        from ray._raylet import Config

        Config.initialize("")
    except Exception:  # pragma: no cover - private API moved; env var still reaches children
        log.debug("could not refresh Ray's cached config", exc_info=True)


# --------------------------------------------------------------------------- worker side

_GPU_FRACTION_SET = False


def _worker_args(args: ComputeArgs, gpu_share: float) -> ComputeArgs:
    """The device a task really has: Ray hides other GPUs, so a granted one is 'cuda'."""
    global _GPU_FRACTION_SET
    if not args.device.startswith("cuda"):
        return args
    if gpu_share <= 0:
        return dataclasses.replace(args, device="cpu")
    if gpu_share < 1 and not _GPU_FRACTION_SET:
        import torch

        # A share of a GPU also means that share of its memory, so co-located tasks
        # fail with a clear OOM of their own instead of starving each other.
        torch.cuda.set_per_process_memory_fraction(gpu_share, 0)
        _GPU_FRACTION_SET = True
    return dataclasses.replace(args, device="cuda")


def run_remote(job: Job, store: ArtifactStore, args: ComputeArgs, gpu_share: float
               ) -> dict[str, Any]:
    """Body of every Ray task: run ``job`` unless its artifact exists; report, never raise
    for a bad input (the driver repairs it)."""
    t0 = time.perf_counter()
    if store.has(job.key):  # built meanwhile by a concurrent sweep, or a retried attempt
        return {"status": "cached", "key": job.key}
    for dep in job.deps():
        if not store.has(dep.key):  # has() also drops a truncated payload
            return {"status": "missing", "key": dep.key}
    args = _worker_args(args, gpu_share)
    try:
        job.run(store, args)
    except CorruptArtifact as e:
        if e.key == job.key:
            raise
        return {"status": "corrupt", "key": e.key, "why": str(e)}
    except KeyError:
        # Another consumer found an input corrupt and removed it after our check above.
        gone = next((d.key for d in job.deps() if not store.has(d.key)), None)
        if gone is None:
            raise
        return {"status": "missing", "key": gone}
    return {"status": "ran", "key": job.key, "seconds": time.perf_counter() - t0,
            "pid": os.getpid()}


# --------------------------------------------------------------------------- driver side


class RayExecutor:
    """Runs a plan's jobs as Ray tasks on a local or joined cluster.

    Args:
        compute: how to compute (device, batch sizes); ``device='cuda'`` makes the
            compute-heavy jobs request GPU shares.
        address: cluster to join (``host:6379``, ``ray://host:10001`` or ``'auto'``).
            None: ``RAY_ADDRESS`` or a cluster already running on this machine, else a
            new local one. A given address is probed first, so a wrong one fails in
            seconds with one ``ConnectionError`` line, before any work.
        progress: show a tqdm bar.
        max_in_flight: tasks outstanding at once (default: twice the cluster's CPUs,
            at least 4); bounds driver memory and lets the repair path act early.
        max_retries: Ray retries of a task whose worker died or that raised a
            transient ``OSError``.
        gpu_fraction: GPU share per job when computing on CUDA: a number for every
            GPU job, or a function of the job (default :func:`default_gpu_share`).
        init_kwargs: extra ``ray.init`` arguments when a new local cluster is started
            (``num_cpus``, ``object_store_memory``, ...).
        runtime_env: ``ray.init`` runtime environment (e.g. ``{"py_modules": [...]}``
            to ship raytda to nodes that lack it).
        probe_timeout_s: how long the reachability probe of ``address`` may take.
    """

    name = "ray"

    def __init__(self, compute: ComputeArgs | None = None, address: str | None = None,
                 progress: bool = True, max_in_flight: int | None = None,
                 max_retries: int = 3, gpu_fraction: GpuPolicy = None,
                 init_kwargs: dict[str, Any] | None = None,
                 runtime_env: dict[str, Any] | None = None, probe_timeout_s: float = 5.0,
                 shutdown: bool = True) -> None:
        self.args = compute or ComputeArgs()
        self.address = address
        self.progress = progress
        self.max_in_flight = max_in_flight
        self.max_retries = max_retries
        self.gpu_fraction = gpu_fraction
        self.init_kwargs = dict(init_kwargs or {})
        self.runtime_env = runtime_env
        self.probe_timeout_s = probe_timeout_s
        self.shutdown = shutdown
        self.stats: Counter[str] = Counter()
        self.ran: list[str] = []
        self._owns_ray = False
        target = address or os.environ.get("RAY_ADDRESS")
        if target:
            probe_address(target, probe_timeout_s)

    # ---------------------------------------------------------------- connection

    def connect(self) -> None:
        """Join or start Ray (no-op if this process is already connected)."""
        _enable_token_auth_if_token_given()
        import ray

        if ray.is_initialized():
            return
        address = self.address or os.environ.get("RAY_ADDRESS") or None
        kw: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
        if self.runtime_env:
            kw["runtime_env"] = self.runtime_env
        if address is None and self.init_kwargs:
            address = "local"  # resource arguments are only valid for a new cluster
        if address in (None, "local"):
            kw.update({"include_dashboard": False} | self.init_kwargs)
        try:
            ray.init(address=address, **kw)
        except ConnectionError as e:
            hint = ("; if the cluster uses token authentication, export RAY_AUTH_MODE=token "
                    "and RAY_AUTH_TOKEN=<token> (from `ray get-auth-token` on the head node)"
                    if os.environ.get("RAY_AUTH_MODE") != "token" else
                    "; check that RAY_AUTH_TOKEN / ~/.ray/auth_token holds the cluster's token")
            first = str(e).splitlines()[0] if str(e) else e.__class__.__name__
            raise ConnectionError(f"{first}{hint}") from None
        except Exception as e:
            if e.__class__.__name__ == "AuthenticationError":
                raise ConnectionError(str(e).splitlines()[0]) from None
            raise
        self._owns_ray = True  # shutdown() disconnects; it stops only what we started

    def close(self) -> None:
        """Shut Ray down if this executor started it."""
        if self._owns_ray:
            import ray

            ray.shutdown()
            self._owns_ray = False

    # ---------------------------------------------------------------- policy

    def gpu_share(self, job: Job) -> float:
        if not self.args.device.startswith("cuda") or job.kind not in GPU_KINDS:
            return 0.0
        pol = self.gpu_fraction
        if pol is None:
            return default_gpu_share(job)
        return float(pol(job) if callable(pol) else pol)

    def options(self, job: Job) -> dict[str, Any]:
        """Ray task options for ``job``: its resources, GPU share, retry policy."""
        opts: dict[str, Any] = dict(job.resources())
        share = self.gpu_share(job)
        if share > 0:
            opts["num_gpus"] = share
        # An explicit strategy keeps jobs out of an enclosing placement group (a Tune
        # trial's captures child tasks by default and has no room for them).
        opts.update(max_retries=self.max_retries, retry_exceptions=list(TRANSIENT_ERRORS),
                    name=f"raytda:{job.kind}", scheduling_strategy="DEFAULT")
        return opts

    # ---------------------------------------------------------------- execution

    def execute(self, plan: Plan, store: ArtifactStore) -> None:
        """Run every job in ``plan.todo``; raise :class:`JobFailed` if some could not be."""
        self.stats.clear()
        self.ran.clear()
        if not plan.todo:
            return
        self.connect()
        try:
            _Run(self, plan, store).loop()
        finally:
            if self.shutdown:
                self.close()


def ship_task_code(plan: Plan) -> None:
    """Pickle user Task classes by value, so workers need not import the user's module.

    A Task defined in a script, a notebook or a test file lives in a module the workers
    cannot import (``ray job submit --working-dir`` makes a project importable, but a
    driver started from a REPL has no such thing). raytda's own classes and installed
    packages are pickled by reference as usual.
    """
    import sys

    from ray import cloudpickle

    for job in plan.jobs:
        for cls in type(job.task).__mro__:
            mod = sys.modules.get(cls.__module__)
            name = cls.__module__.split(".")[0]
            if mod is None or name in ("raytda", "builtins", "__main__") \
                    or "site-packages" in (getattr(mod, "__file__", None) or "site-packages"):
                continue
            cloudpickle.register_pickle_by_value(mod)


class _Run:
    """Driver-side bookkeeping of one ``execute`` call."""

    def __init__(self, ex: RayExecutor, plan: Plan, store: ArtifactStore) -> None:
        import ray

        ship_task_code(plan)
        self.ray, self.ex, self.store = ray, ex, store
        self.remote = ray.remote(run_remote)
        self.jobs: dict[str, Job] = {j.key: j for j in plan.jobs}
        self.done: set[str] = set(plan.cached)
        self.pending: set[str] = set()  # waiting, ready or running
        self.waiting: dict[str, set[str]] = {}
        self.dependents: dict[str, set[str]] = {}
        self.ready: deque[str] = deque()
        self.running: dict[Any, str] = {}
        self.running_keys: set[str] = set()
        self.failed: dict[str, str] = {}
        self.repairs: Counter[str] = Counter()
        self.added = self.settled = 0  # progress: jobs ever queued, jobs done or failed
        for job in plan.todo:
            self.want(job)
        if "://" not in store.uri or store.uri.startswith("file://"):
            nodes = [n for n in ray.nodes() if n.get("Alive")]
            if len(nodes) > 1:
                log.warning("store %s is a local path but the cluster has %d nodes; every "
                            "node must mount it at the same path (else use s3://, gs://, "
                            "or a shared filesystem)", store.uri, len(nodes))
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.limit = ex.max_in_flight or max(4, 2 * cpus)
        if ex.args.device.startswith("cuda") and not ray.cluster_resources().get("GPU"):
            log.warning("computing on CUDA but the cluster has no GPUs yet; GPU tasks wait "
                        "for the autoscaler to add GPU nodes")

    # A job enters 'pending' once and leaves it as done or failed.
    def want(self, job: Job) -> None:
        key = job.key
        if key in self.pending:
            return
        self.jobs[key] = job
        self.done.discard(key)
        deps: set[str] = set()
        for dep in job.deps():
            if dep.key in self.done:
                continue
            if dep.key not in self.pending:
                if self.store.has(dep.key):
                    self.done.add(dep.key)
                    continue
                self.want(dep)
            deps.add(dep.key)
        self.pending.add(key)
        self.added += 1
        self.waiting[key] = deps
        for d in deps:
            self.dependents.setdefault(d, set()).add(key)
        if not deps:
            self.ready.append(key)

    def finish(self, key: str) -> None:
        self.settled += 1
        self.pending.discard(key)
        self.done.add(key)
        for c in sorted(self.dependents.pop(key, ())):
            w = self.waiting.get(c)
            if w is not None and key in w:
                w.discard(key)
                if not w and c in self.pending:
                    self.ready.append(c)

    def fail(self, key: str, why: str) -> None:
        stack = [(key, why)]
        while stack:
            k, w = stack.pop()
            if k in self.failed:
                continue
            self.failed[k] = w
            self.settled += 1
            self.pending.discard(k)
            self.waiting.pop(k, None)
            for c in self.dependents.pop(k, ()):
                stack.append((c, f"blocked: input {k} failed"))

    def repair(self, consumer: str, bad: str, why: str) -> None:
        """Rebuild input ``bad`` of ``consumer``, then run the consumer again."""
        self.pending.discard(consumer)
        self.done.discard(bad)
        # Many consumers may trip over the same bad input; rebuild it once.
        if bad not in self.pending:
            if self.store.has(bad):  # rebuilt meanwhile (this or a concurrent sweep)
                self.done.add(bad)
            else:
                job = self.jobs[consumer]
                producer = (self.jobs.get(bad)
                            or next((d for d in job.deps() if d.key == bad), None))
                self.repairs[bad] += 1
                if producer is None or self.repairs[bad] > 3:
                    self.fail(consumer, f"input {bad} is {why} and could not be rebuilt")
                    return
                log.warning("input %s of %s is %s; rebuilding it", bad, job.describe(), why)
                self.ex.stats["repaired"] += 1
                self.want(producer)
        self.requeue(consumer)

    def requeue(self, key: str) -> None:
        self.added -= 1  # counted when first queued
        self.want(self.jobs[key])

    def submit(self, key: str) -> None:
        job = self.jobs[key]
        ex = self.ex
        ref = self.remote.options(**ex.options(job)).remote(
            job, self.store, ex.args, ex.gpu_share(job))
        self.running[ref] = key
        self.running_keys.add(key)

    def handle(self, ref: Any) -> None:
        key = self.running.pop(ref)
        self.running_keys.discard(key)
        try:
            out = self.ray.get(ref)
        except Exception as e:
            msg = str(e).strip().splitlines()
            self.fail(key, msg[-1] if msg else e.__class__.__name__)
            log.error("%s failed: %s", self.jobs[key].describe(), e)
            self.ex.stats["failed"] += 1
            return
        status = out["status"]
        self.ex.stats[status] += 1
        if status in ("ran", "cached"):
            if status == "ran":
                self.ex.ran.append(key)
            self.finish(key)
        else:
            self.repair(key, out["key"], "missing" if status == "missing" else "corrupt")

    def loop(self) -> None:
        bar = None
        if self.ex.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.added, desc="raytda jobs (ray)", unit="job")
        try:
            while self.pending:
                while self.ready and len(self.running) < self.limit:
                    key = self.ready.popleft()
                    if key in self.pending and key not in self.running_keys:
                        self.submit(key)
                if not self.running:
                    stuck = sorted(self.pending)[:3]
                    raise RuntimeError(f"scheduler stalled with jobs pending: {stuck}")
                finished, _ = self.ray.wait(list(self.running), num_returns=1)
                for ref in finished:
                    self.handle(ref)
                if bar is not None:
                    bar.total, bar.n = self.added, self.settled
                    bar.set_postfix_str(f"{len(self.running)} running", refresh=False)
                    bar.refresh()
        except BaseException:
            for ref in list(self.running):
                self.ray.cancel(ref, force=True)
            raise
        finally:
            if bar is not None:
                bar.close()
        if self.failed:
            first = next(iter(self.failed.items()))
            raise JobFailed(f"{len(self.failed)} job(s) failed; first: "
                            f"{self.jobs[first[0]].describe()}: {first[1]}")
