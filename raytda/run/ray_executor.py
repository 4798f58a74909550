"""The Ray executor: a plan's jobs on a pool of Ray actors, dependency-aware, with
retries and repair.

The driver keeps the DAG: a job is dispatched once all its inputs exist, one at a time
to each actor (:class:`RaytdaWorker`), and results stream back through ``ray.wait``.
An actor keeps the task's data, the model weights it read and the projections it built,
so the driver sends a model's Q and block jobs to the actor that trained it (an idle actor
takes other work rather than wait). The pool's size follows the cluster's resources,
re-read during the run, and the autoscaler is asked for what the ready jobs could use.
Actors share nothing but the artifact store (pickled by URI), so a job's only output is a
small status dict; tensors never travel through the object store.

Failure handling, from cheapest to most drastic:

* an actor process that dies (OOM kill, preemption, ``kill -9``) is restarted by Ray and
  its job retried (``max_retries``), as are transient ``OSError``s (store on a flaky
  network filesystem), but not a full disk, which stops the sweep with one
  ``StoreError`` line; an actor whose node is gone is dropped and its job requeued;
* a job that runs out of CUDA memory on a GPU share reports ``'oom'`` and runs again on
  an actor with twice the share, up to a whole GPU, before it fails;
* a job whose input turns out truncated or corrupt (``CorruptArtifact``, or missing
  altogether) reports the input's key instead of failing; the driver reruns the producer
  (and, recursively, whatever the producer itself lacks), then the consumer;
* a job that still fails marks its dependents as blocked (the worker's traceback is
  logged on the driver); independent jobs go on, so the store keeps every artifact that
  could be built, and the sweep raises at the end;
* a driver that is killed loses nothing: every finished artifact is in the store, and a
  rerun plans only what is missing.

Ray is imported here and in :mod:`raytda.run.tune` only, never by ``import raytda``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections import Counter, deque
from typing import Any

from raytda.core.args import ComputeArgs
from raytda.plan.jobs import Job
from raytda.plan.planner import Plan
from raytda.run.connect import join_ray, probe_address
from raytda.run.local import JobFailed
from raytda.run.policy import (
    GpuPolicy,
    actor_compute_args,
    actors_per_node,
    default_gpu_share,
    ship_task_code,
)
from raytda.run.remote import TRANSIENT_ERRORS, RaytdaWorker
from raytda.run.worker import job_cpus
from raytda.store import ArtifactStore, StoreError

log = logging.getLogger(__name__)

#: how long costed jobs wait for starting actors before being handed out anyway (s)
STARTUP_GRACE_S = 60.0

# --------------------------------------------------------------------------- connection


class RayExecutor:
    """Runs a plan's jobs on a pool of Ray actors on a local or joined cluster.

    The driver keeps the DAG and routes each ready job to an actor: the Q and block jobs
    of a model go to the actor that trained or loaded it (it holds the weights and the
    projections), other jobs to any free actor, and an idle actor takes another's queued
    work rather than wait. The pool follows the cluster: its size is polled from the
    cluster's resources during the run (at most one actor per ``num_cpus`` CPUs and
    accelerator share), the autoscaler is asked for what the ready jobs could use, and
    actors on a node that went away are replaced by the scheduler's choice.

    Args:
        compute: how to compute (device, batch sizes, memory budget); ``device='cuda'``
            makes the actors request GPU shares. ``memory_budget_bytes`` is per node: each
            actor gets it divided by the actors its node holds.
        address: cluster to join (``host:6379``, ``ray://host:10001`` or ``'auto'``).
            None: ``RAY_ADDRESS`` or a cluster already running on this machine, else a
            new local one. A given address is probed first, so a wrong one fails in
            seconds with one ``ConnectionError`` line, before any work.
        progress: show a tqdm bar.
        max_workers: most actors at once (default: as many as the cluster holds).
        max_in_flight: older name of ``max_workers`` (one job in flight per actor).
        max_retries: restarts of an actor whose process died (OOM kill, preemption,
            ``kill -9``), retries of the job it was running (Ray's ``max_task_retries``)
            and of a job that raised a transient ``OSError``.
        gpu_fraction: accelerator share per actor: a number, or a function of the job
            (default :func:`default_gpu_share`; the pool takes the largest over the plan).
            A job that runs out of CUDA memory on a share is retried on twice the share,
            up to a whole device, before it fails.
        accelerator: the Ray resource that stands for a GPU share: ``"GPU"`` (shares
            requested only when computing on CUDA), or a custom resource (e.g.
            ``"fake_gpu"`` in tests, or a node label resource) that actors always
            request, whatever the device.
        autoscale: ask the autoscaler (``ray.autoscaler.sdk.request_resources``) for the
            actors the ready jobs could use; harmless on a fixed cluster.
        keep_workers: keep the actors (and what they hold) between ``execute`` calls
            until :meth:`close`; by default they go when a plan is done, freeing the CPUs.
        poll_s: how often the driver re-reads the cluster's resources and nodes.
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
                 shutdown: bool = True, max_workers: int | None = None,
                 accelerator: str = "GPU", autoscale: bool = True,
                 keep_workers: bool = False, poll_s: float = 1.0) -> None:
        self.args = compute or ComputeArgs()
        self.address = address
        self.progress = progress
        self.max_workers = max_workers or max_in_flight
        self.max_retries = max_retries
        self.gpu_fraction = gpu_fraction
        self.accelerator = accelerator
        self.autoscale = autoscale
        self.keep_workers = keep_workers
        self.poll_s = poll_s
        self.init_kwargs = dict(init_kwargs or {})
        self.runtime_env = runtime_env
        self.probe_timeout_s = probe_timeout_s
        self.shutdown = shutdown
        self.stats: Counter[str] = Counter()
        self.ran: list[str] = []
        self.placement: dict[str, dict[str, Any]] = {}  # job key -> where it ran
        self.workers: dict[str, dict[str, Any]] = {}  # actor name -> its last loads
        self.pool: list[_Slot] = []
        self._owns_ray = False
        target = address or os.environ.get("RAY_ADDRESS")
        if target:
            probe_address(target, probe_timeout_s)

    # ---------------------------------------------------------------- connection

    def connect(self) -> None:
        """Join or start Ray (no-op if this process is already connected)."""
        if join_ray(self.address, self.init_kwargs, self.runtime_env):
            self._owns_ray = True  # shutdown() disconnects; it stops only what we started

    def stop_workers(self) -> None:
        """Kill this executor's actors (what they held is gone; the store keeps all)."""
        if not self.pool:
            return
        import ray

        for slot in self.pool:
            try:
                ray.kill(slot.handle, no_restart=True)
            except Exception:  # already dead, or Ray is shutting down
                log.debug("could not kill %s", slot.name, exc_info=True)
        self.pool.clear()

    def close(self) -> None:
        """Stop the actors, and shut Ray down if this executor started it."""
        self.stop_workers()
        if self._owns_ray:
            import ray

            ray.shutdown()
            self._owns_ray = False

    # ---------------------------------------------------------------- policy

    @property
    def uses_accelerator(self) -> bool:
        return self.args.device.startswith("cuda") or self.accelerator != "GPU"

    def gpu_share(self, job: Job) -> float:
        if not self.uses_accelerator or not job.accelerated:
            return 0.0
        pol = self.gpu_fraction
        if pol is None:
            return default_gpu_share(job)
        return float(pol(job) if callable(pol) else pol)

    def actor_options(self, share: float, cpus: int) -> dict[str, Any]:
        """Ray actor options: its reservation and restart policy."""
        opts: dict[str, Any] = {"num_cpus": cpus, "max_restarts": self.max_retries,
                                "max_task_retries": self.max_retries, "max_concurrency": 1,
                                # An explicit strategy keeps actors out of an enclosing
                                # placement group (a Tune trial's has no room for them).
                                "scheduling_strategy": "DEFAULT"}
        if share > 0:
            if self.accelerator == "GPU":
                opts["num_gpus"] = share
            else:
                opts["resources"] = {self.accelerator: share}
        return opts

    def bundle(self, share: float, cpus: int) -> dict[str, float]:
        """One actor's resources as an autoscaler bundle."""
        out: dict[str, float] = {"CPU": float(cpus)}
        if share > 0:
            out[self.accelerator] = share
        return out

    # ---------------------------------------------------------------- execution

    def execute(self, plan: Plan, store: ArtifactStore) -> None:
        """Run every job in ``plan.todo``; raise :class:`JobFailed` if some could not be."""
        self.stats.clear()
        self.ran.clear()
        self.placement.clear()
        if not plan.todo:
            return
        self.connect()
        try:
            _Run(self, plan, store).loop()
        finally:
            if not self.keep_workers:
                self.stop_workers()
            if self.shutdown:
                self.close()


@dataclasses.dataclass(eq=False)
class _Slot:
    """One actor of the pool, as the driver sees it."""

    handle: Any
    name: str
    share: float
    started: Any  # ref of its first info() call: the actor is usable once it resolves
    node_id: str | None = None
    ready: bool = False
    busy: str | None = None  # key of the job it runs
    dedicated: str | None = None  # a job retried on a larger share, alone on this actor
    since: float = dataclasses.field(default_factory=time.monotonic)  # when it was asked for


class _Run:
    """Driver-side bookkeeping of one ``execute`` call."""

    def __init__(self, ex: RayExecutor, plan: Plan, store: ArtifactStore) -> None:
        import ray

        ship_task_code(plan)
        self.ray, self.ex, self.store = ray, ex, store
        self.actor_cls = ray.remote(RaytdaWorker)
        self.jobs: dict[str, Job] = {j.key: j for j in plan.jobs}
        self.done: set[str] = set(plan.cached)
        self.pending: set[str] = set()  # waiting, ready or running
        self.waiting: dict[str, set[str]] = {}
        self.dependents: dict[str, set[str]] = {}
        self.ready: deque[str] = deque()
        self.running: dict[Any, tuple[str, _Slot]] = {}
        self.running_keys: set[str] = set()
        self.failed: dict[str, str] = {}
        self.repairs: Counter[str] = Counter()
        self.requeues: Counter[str] = Counter()
        self.bigger: dict[str, float] = {}  # job -> share it retries on after a CUDA OOM
        self.owner: dict[str, str] = {}  # affinity key -> actor name
        self.added = self.settled = 0  # progress: jobs ever queued, jobs done or failed
        self.next_poll = 0.0
        self.capacity = 0
        self.per_node: dict[str, int] = {}  # node id -> actors of this pool it holds
        self.requested = -1
        self.serial = len(ex.pool)
        for job in plan.todo:
            self.want(job)
        self.cpus = max((job_cpus(j) for j in plan.jobs), default=1)
        # The pool's share: the largest any job asks for. The default policy depends on
        # the model only, so one job per task and kind answers for all of them.
        probes = {(j.task.key, j.kind): j for j in plan.todo} if ex.gpu_fraction is None \
            else {(j.key,): j for j in plan.todo}
        self.share = max((ex.gpu_share(j) for j in probes.values()), default=0.0)
        for slot in list(ex.pool):  # actors kept from an earlier plan must still fit
            if slot.share != self.share or slot.dedicated:
                self.kill(slot)
        if "://" not in store.uri or store.uri.startswith("file://"):
            nodes = [n for n in ray.nodes() if n.get("Alive")]
            if len(nodes) > 1:
                log.warning("store %s is a local path but the cluster has %d nodes; every "
                            "node must mount it at the same path (else use s3://, gs://, "
                            "or a shared filesystem)", store.uri, len(nodes))
        if ex.args.device.startswith("cuda") and ex.accelerator == "GPU" \
                and not ray.cluster_resources().get("GPU"):
            log.warning("computing on CUDA but the cluster has no GPUs yet; actors wait for "
                        "the autoscaler to add GPU nodes")

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
        self.pending.discard(key)
        self.want(self.jobs[key])

    # ---------------------------------------------------------------- the pool

    def start_actor(self, share: float, dedicated: str | None = None) -> _Slot:
        ex = self.ex
        name = f"raytda-worker-{os.getpid()}-{id(ex) % 10_000:04d}-{self.serial}"
        self.serial += 1
        handle = self.actor_cls.options(name=name, **ex.actor_options(share, self.cpus)).remote(
            name, share, ex.accelerator)
        slot = _Slot(handle, name, share, handle.info.remote(), dedicated=dedicated)
        ex.pool.append(slot)
        ex.stats["actors_started"] += 1
        return slot

    def kill(self, slot: _Slot) -> None:
        if slot in self.ex.pool:
            self.ex.pool.remove(slot)
        try:
            self.ray.kill(slot.handle, no_restart=True)
        except Exception:  # already gone
            log.debug("could not kill %s", slot.name, exc_info=True)
        for a, owner in list(self.owner.items()):
            if owner == slot.name:
                del self.owner[a]

    def poll(self) -> None:
        """Re-read the cluster: resize the pool to what it holds now, replace actors on
        nodes that are gone, and ask the autoscaler for what the ready jobs could use."""
        ray, ex = self.ray, self.ex
        now = time.monotonic()
        if now < self.next_poll:
            return
        self.next_poll = now + ex.poll_s
        res = ray.cluster_resources()
        cap = int(res.get("CPU", 0) // self.cpus)
        if self.share > 0:
            cap = min(cap, int(res.get(ex.accelerator, 0) / self.share + 1e-9))
        if ex.max_workers:
            cap = min(cap, ex.max_workers)
        self.capacity = cap
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        alive = {n["NodeID"] for n in nodes}
        self.per_node = {n["NodeID"]: actors_per_node(n.get("Resources", {}), self.cpus,
                                                      self.share, ex.accelerator) for n in nodes}
        for slot in list(ex.pool):
            if slot.node_id is not None and slot.node_id not in alive:
                # Its node is gone: Ray would restart it elsewhere only once resources
                # free up; the driver requeues its job on the actors that are left.
                log.warning("node %s of %s is gone; its running job is requeued",
                            slot.node_id[:8], slot.name)
                ex.stats["lost_actors"] += 1
                self.kill(slot)
        pool = [s for s in ex.pool if not s.dedicated]
        demand = len(self.ready) + sum(1 for s in pool if s.busy)
        want = min(demand, ex.max_workers or demand)
        if ex.autoscale and want != self.requested:
            self.request(want)
        # Shrink to what the cluster holds now: idle actors go first, starting ones next.
        extra = len(pool) - max(cap, 1)
        for slot in sorted(pool, key=lambda s: (s.busy is not None, s.ready)):
            if extra <= 0 or slot.busy is not None:
                break
            self.kill(slot)
            ex.stats["actors_stopped"] += 1
            extra -= 1
        # Grow up to it, but not beyond what there is to do (at least one actor, so a
        # cluster that has no room yet gets an autoscaler request and a pending actor).
        grow = min(max(cap, 1), max(want, 1)) - len([s for s in ex.pool if not s.dedicated])
        for _ in range(grow if demand else 0):
            self.start_actor(self.share)

    def request(self, n: int) -> None:
        try:
            from ray.autoscaler.sdk import request_resources

            request_resources(bundles=[self.ex.bundle(self.share, self.cpus)] * n)
            self.requested = n
        except Exception:  # no autoscaler API on this cluster: nothing to ask
            log.debug("request_resources failed", exc_info=True)
            self.ex.autoscale = False

    def pick(self, slot: _Slot) -> str | None:
        """The ready job for ``slot``: one of its own models' first, then one nobody
        holds, then another actor's (an idle actor steals rather than wait). While actors
        are still starting (a process booting Ray and torch, outside any timing slot), only
        work nobody is charged for is handed out, so no cost is timed beside a start-up."""
        best: tuple[int, str] | None = None
        now = time.monotonic()
        # Bounded: an actor waiting for resources that never come (a node the autoscaler
        # cannot add) must not hold costed work back for good.
        starting = any(not s.ready and now - s.since < STARTUP_GRACE_S for s in self.ex.pool)
        for key in list(self.ready):
            if key not in self.pending or key in self.running_keys:
                self.ready.remove(key)
                continue
            if key in self.bigger:
                continue  # waits for an actor with a larger share
            if starting and self.jobs[key].costed:
                continue
            a = self.jobs[key].affinity()
            owner = self.owner.get(a) if a is not None else None
            rank = 0 if owner == slot.name and a is not None else 1 if owner is None else 2
            if rank == 0:
                best = (0, key)
                break
            if best is None or rank < best[0]:
                best = (rank, key)
        if best is None:
            return None
        self.ready.remove(best[1])
        return best[1]

    def dispatch(self) -> None:
        for key, share in list(self.bigger.items()):
            if key in self.pending and key in self.ready and key not in self.running_keys \
                    and not any(s.dedicated == key for s in self.ex.pool):
                self.start_actor(share, dedicated=key)
        for slot in list(self.ex.pool):
            if not slot.ready or slot.busy is not None:
                continue
            if slot.dedicated:
                if slot.dedicated in self.ready:
                    self.ready.remove(slot.dedicated)
                    self.submit(slot, slot.dedicated)
                continue
            key = self.pick(slot)
            if key is None:
                continue
            self.submit(slot, key)

    def submit(self, slot: _Slot, key: str) -> None:
        job = self.jobs[key]
        a = job.affinity()
        if a is not None and a not in self.owner:
            self.owner[a] = slot.name
        # A node not seen yet (just joined) counts as the most crowded one known.
        crowd = self.per_node.get(slot.node_id) or max(self.per_node.values(), default=1)
        ref = slot.handle.run.options(retry_exceptions=list(TRANSIENT_ERRORS)).remote(
            job, self.store, actor_compute_args(self.ex.args, crowd))
        self.running[ref] = (key, slot)
        self.running_keys.add(key)
        slot.busy = key

    # ---------------------------------------------------------------- results

    def started(self, ref: Any) -> None:
        slot = next(s for s in self.ex.pool if s.started == ref)
        try:
            info = self.ray.get(ref)
        except Exception as e:
            log.warning("%s could not start: %s", slot.name, str(e).strip().splitlines()[-1:])
            self.kill(slot)
            return
        slot.node_id, slot.ready = info["node_id"], True
        self.ex.workers[slot.name] = info

    def handle(self, ref: Any) -> None:
        key, slot = self.running.pop(ref)
        self.running_keys.discard(key)
        slot.busy = None
        job = self.jobs[key]
        try:
            out = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as e:
            # Its actor is gone for good (node removed, restarts used up): the job
            # itself did nothing wrong, so it runs again elsewhere.
            if slot in self.ex.pool:
                self.kill(slot)
            self.requeues[key] += 1
            if self.requeues[key] > self.ex.max_retries:
                self.fail(key, f"its actor died {self.requeues[key]} times: {e}")
                self.ex.stats["failed"] += 1
                return
            self.ex.stats["requeued"] += 1
            self.requeue(key)
            return
        except StoreError as e:
            # The store is full or gone: every other job would fail the same way, so the
            # sweep stops with the worker's one line (no traceback, no retry).
            cause = getattr(e, "cause", None) or e
            raise StoreError(str(cause).strip().splitlines()[0]) from None
        except Exception as e:
            msg = str(e).strip().splitlines()
            self.fail(key, msg[-1] if msg else e.__class__.__name__)
            # The worker's traceback, on the driver's log (and so in `ray job logs`).
            log.error("%s failed on %s:\n%s", job.describe(), slot.name, e)
            self.ex.stats["failed"] += 1
            return
        finally:
            if slot.dedicated and slot in self.ex.pool:
                self.kill(slot)
        status = out["status"]
        self.ex.stats[status] += 1
        self.ex.placement[key] = {k: out.get(k) for k in ("worker", "node_id", "pid")}
        if "loads" in out:
            self.ex.workers[out["worker"]] = {**self.ex.workers.get(out["worker"], {}),
                                              "loads": out["loads"]}
        if status in ("ran", "cached"):
            if status == "ran":
                self.ex.ran.append(key)
            self.bigger.pop(key, None)
            self.finish(key)
        elif status == "oom":
            share = float(out.get("share") or self.share or 1.0)
            if share >= 1.0:
                self.fail(key, f"CUDA out of memory on a whole GPU: {out.get('why')}")
                self.ex.stats["failed"] += 1
                return
            new = min(1.0, 2 * share)
            log.warning("%s ran out of memory on %g of a GPU; retrying on %g", job.describe(),
                        share, new)
            self.bigger[key] = new
            self.requeue(key)
        else:
            self.repair(key, out["key"], "missing" if status == "missing" else "corrupt")

    def loop(self) -> None:
        bar = None
        if self.ex.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.added, desc="raytda jobs (ray)", unit="job")
        try:
            while self.pending:
                self.poll()
                self.dispatch()
                starting = [s.started for s in self.ex.pool if not s.ready]
                if not self.running and not starting and not self.ex.pool:
                    self.next_poll = 0.0  # nothing alive: re-read the cluster now
                    self.poll()
                    if not self.ex.pool:
                        stuck = sorted(self.pending)[:3]
                        raise RuntimeError(f"scheduler stalled with jobs pending: {stuck}")
                    continue
                finished, _ = self.ray.wait([*self.running, *starting], num_returns=1,
                                            timeout=self.ex.poll_s)
                for ref in finished:
                    if ref in self.running:
                        self.handle(ref)
                    else:
                        self.started(ref)
                if bar is not None:
                    bar.total, bar.n = self.added, self.settled
                    bar.set_postfix_str(f"{len(self.running)} running on "
                                        f"{len(self.ex.pool)} actors", refresh=False)
                    bar.refresh()
        except BaseException:
            # Actor tasks cannot be force-cancelled; killing the actors stops them.
            self.ex.stop_workers()
            raise
        finally:
            if bar is not None:
                bar.close()
            if self.ex.autoscale and self.requested > 0:
                self.request(0)  # the sweep needs nothing more
        if self.failed:
            first = next(iter(self.failed.items()))
            raise JobFailed(f"{len(self.failed)} job(s) failed; first: "
                            f"{self.jobs[first[0]].describe()}: {first[1]}")
