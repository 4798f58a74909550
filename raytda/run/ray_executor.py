"""The Ray executor: a plan's jobs on a pool of Ray actors, dependency-aware, with
retries and repair.

The driver keeps the DAG (:mod:`raytda.run.job_graph`): a job is dispatched once all its
inputs exist, one at a time to each actor (:class:`~raytda.run.ray_actor.RaytdaWorker`),
and results stream back through ``ray.wait``. An actor keeps the task's data, the model
weights it read and the projections it built, so the driver sends a model's Q and block
jobs to the actor that trained it (:mod:`raytda.run.actor_pool`, which also sizes the pool
to the cluster). Actors share nothing but the artifact store (pickled by URI), so a job's
only output is a small status dict; tensors never travel through the object store. A job
that does not simply finish is handled by :mod:`raytda.run.recovery`; a driver that is
killed loses nothing: every finished artifact is in the store, and a rerun plans only what
is missing.

Several sweeps may share one store: an actor never waits for a lease another sweep holds
(it answers ``leased`` at once); the driver puts that job aside, gives the actor other ready
work, and looks at the job again every ``poll_s``: done when its artifact appears, sent
again once its lease is gone or expired (its holder died or stopped renewing).

Ready training jobs that may train together (one ``Job.pack_key``) go to an actor as one
call, a :class:`~raytda.plan.packs.TrainPack` (``ComputeArgs.train_pack``, default
``"auto"``), grouped by the in-process executor's rule
(:func:`~raytda.plan.packs.gather_pack`) and spread over the actors that could take them;
each member is leased, stored and answered as if it had run alone, so a pack retried on a
restarted actor trains only the members not stored yet.

Each job runs as an actor call named after the job (``train model 3 of digits-mlp``), so
the Ray dashboard and ``ray list tasks`` say what runs, not ``RaytdaWorker.run``.

Ray is imported here and in :mod:`raytda.tune.search` only, never by ``import raytda``.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from typing import Any

from raytda.core.args import ComputeArgs
from raytda.plan.job import Job
from raytda.plan.packs import TrainPack, gather_pack
from raytda.plan.planner import Plan
from raytda.run.actor_pool import ActorPool, ActorSlot
from raytda.run.connect import join_ray, probe_address
from raytda.run.eta import UnitCostETA
from raytda.run.job_graph import JobGraph
from raytda.run.logs import current_level
from raytda.run.node_paths import check_paths_on_nodes, data_paths, store_path
from raytda.run.policy import GpuPolicy, actor_compute_args, default_gpu_share, ship_task_code
from raytda.run.progress import JobCounts, Progress, job_label, open_progress, packed_note
from raytda.run.ray_actor import TRANSIENT_ERRORS, RaytdaWorker
from raytda.run.recovery import JobFailed, Recovery
from raytda.run.worker import job_cpus
from raytda.store import ArtifactStore, StoreError
from raytda.store.lease import held_elsewhere

log = logging.getLogger(__name__)

#: how long running jobs may take to end once the store failed, before their actors go (s)
STOP_GRACE_S = 10.0

__all__ = ["JobFailed", "RayExecutor"]


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
        progress: show progress (a bar on a terminal, timestamped lines in a log; see
            :mod:`raytda.run.progress`).
        max_retries: restarts of an actor whose process died (OOM kill, preemption,
            ``kill -9``), retries of the job it was running (Ray's ``max_task_retries``)
            and of a job that raised a transient ``OSError``.
        gpu_fraction: accelerator share per actor: a number, or a function of the job
            (default :func:`default_gpu_share`; the pool takes the largest over the plan).
            A job that runs out of CUDA memory on a share is retried on twice the share,
            up to a whole device, before it fails.
        init_kwargs: extra ``ray.init`` arguments when a new local cluster is started
            (``num_cpus``, ``object_store_memory``, ...).
        runtime_env: ``ray.init`` runtime environment (e.g. ``{"py_modules": [...]}``
            to ship raytda to nodes that lack it).
        probe_timeout_s: how long the reachability probe of ``address`` may take.
        shutdown: after ``execute``, stop the actors and shut Ray down if this executor
            started it.
        max_workers: most actors at once (default: as many as the cluster holds).
        accelerator: the Ray resource that stands for a GPU share: ``"GPU"`` (shares
            requested only when computing on CUDA), or a custom resource (e.g.
            ``"fake_gpu"`` in tests, or a node label resource) that actors always
            request, whatever the device.
        autoscale: ask the autoscaler (``ray.autoscaler.sdk.request_resources``) for the
            actors the ready jobs could use; harmless on a fixed cluster.
        keep_workers: keep the actors (and what they hold) between ``execute`` calls
            until :meth:`close`; by default they go when a plan is done, freeing the CPUs.
        poll_s: how often the driver re-reads the cluster's resources and nodes.
    """

    name = "ray"

    def __init__(self, compute: ComputeArgs | None = None, address: str | None = None,
                 progress: bool = True, max_retries: int = 3, gpu_fraction: GpuPolicy = None,
                 init_kwargs: dict[str, Any] | None = None,
                 runtime_env: dict[str, Any] | None = None, probe_timeout_s: float = 5.0,
                 shutdown: bool = True, max_workers: int | None = None,
                 accelerator: str = "GPU", autoscale: bool = True,
                 keep_workers: bool = False, poll_s: float = 1.0) -> None:
        self.args = compute or ComputeArgs()
        self.address = address
        self.progress = progress
        self.max_workers = max_workers
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
        self.pool: list[ActorSlot] = []  # the actors, kept between plans by keep_workers
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
        """Whether actors request accelerator shares at all."""
        return self.args.device.startswith("cuda") or self.accelerator != "GPU"

    def gpu_share(self, job: Job) -> float:
        """The accelerator share ``job`` asks for (0 for jobs that gain nothing by one)."""
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
            # Before any actor starts: a path some node cannot see is one line now, not a
            # failure of every job placed there.
            tasks = {id(j.task): j.task for j in plan.todo}.values()
            check_paths_on_nodes(store_path(store.uri) + data_paths(tasks))
            _Driver(self, plan, store).loop()
        finally:
            if not self.keep_workers:
                self.stop_workers()
            if self.shutdown:
                self.close()


class _Driver:
    """One ``execute`` call: dispatch ready jobs to idle actors, wait for what comes back
    (an actor's start, a job's status), and hand each answer to the graph, the pool or
    the recovery."""

    def __init__(self, ex: RayExecutor, plan: Plan, store: ArtifactStore) -> None:
        import ray

        ship_task_code(plan)
        self.ray, self.ex, self.store = ray, ex, store
        self.graph = JobGraph(plan.todo, plan.jobs, plan.cached, store)
        self.recovery = Recovery(self.graph, ex.stats, ex.max_retries)
        # ref of a call -> the job (or pack of training jobs) it runs, and its actor
        self.running: dict[Any, tuple[Job, ActorSlot]] = {}
        self.eta = UnitCostETA(plan.todo)  # the progress's time left
        # ready jobs another sweep holds the lease of -> when to look at them again
        self.elsewhere: dict[str, float] = {}
        self.cached = sum(1 for j in plan.jobs if j.key in plan.cached)
        cpus = max((job_cpus(j) for j in plan.jobs), default=1)
        # The pool's share: the largest any job asks for. The default policy depends on
        # the task's model and whether the job is accelerated only, so one job per such
        # pair answers for all of them.
        probes = {(j.task.key, j.accelerated): j for j in plan.todo} \
            if ex.gpu_fraction is None else {(j.key,): j for j in plan.todo}
        share = max((ex.gpu_share(j) for j in probes.values()), default=0.0)
        self.pool = ActorPool(ex, ray.remote(RaytdaWorker), cpus, share, current_level())
        self._warn_about_the_cluster()
        if log.isEnabledFor(logging.INFO):
            log.info("%d jobs to run (%d cached) on Ray: %g CPUs, %s", self.graph.added,
                     self.cached, ray.cluster_resources().get("CPU", 0),
                     f"{share:g} {ex.accelerator} per actor" if share else "no accelerator")

    def _warn_about_the_cluster(self) -> None:
        ray, ex, store = self.ray, self.ex, self.store
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

    # ---------------------------------------------------------------- dispatch

    def dispatch(self) -> None:
        """Give every idle actor a ready job; start an actor of its own for each job that
        waits for a larger GPU share."""
        graph, pool, bigger = self.graph, self.pool, self.recovery.bigger
        for key, share in list(bigger.items()):
            if key in graph.pending and graph.is_ready(key) and key not in self.elsewhere \
                    and not any(s.dedicated == key for s in self.ex.pool):
                pool.start(share, dedicated=key)
        for slot in list(self.ex.pool):
            if not slot.ready or slot.busy is not None:
                continue
            if slot.dedicated:
                if graph.is_ready(slot.dedicated):
                    self.submit(slot, graph.jobs[slot.dedicated])
                continue
            ready = [j for j in graph.ready_jobs()
                     if j.key not in bigger and j.key not in self.elsewhere]
            job = pool.choose(slot, ready)
            if job is not None:
                self.submit(slot, self.pack(job, ready) or job)

    def pack(self, job: Job, ready: list[Job]) -> TrainPack | None:
        """``job`` and the ready jobs that train with it (the in-process executor's rule,
        :func:`gather_pack`), split evenly among the actors that could take them: every
        general actor but those already training jobs of this key (an actor still
        starting counts: it takes its share once up)."""
        key = job.pack_key()
        if key is None:
            return None
        training = {id(slot) for j, slot in self.running.values()
                    if j.stored_jobs()[0].pack_key() == key}
        spread = sum(1 for s in self.ex.pool if not s.dedicated and id(s) not in training)
        return gather_pack(job, ready, self.store, self.ex.args.pack_limit, spread)

    def submit(self, slot: ActorSlot, job: Job) -> None:
        crowd = 1
        for m in job.stored_jobs():  # a pack: each member, as if dispatched alone
            self.graph.start(m.key)
            crowd = self.pool.assign(slot, m)
            self.eta.started(m)
        slot.busy = job.key
        name = job_label(job)
        log.debug("%s -> %s", name, slot.name)
        # Named after the job: the dashboard's task list says what runs where.
        ref = slot.handle.run.options(name=name, retry_exceptions=list(TRANSIENT_ERRORS)).remote(
            job, self.store, actor_compute_args(self.ex.args, crowd), False)
        self.running[ref] = (job, slot)

    # ---------------------------------------------------------------- answers

    def answered(self, ref: Any) -> None:
        """A job's actor answered: the job finished, or what went wrong decides what next.
        A pack's answer is each member's, as if each had run alone."""
        ex, graph, recovery = self.ex, self.graph, self.recovery
        job, slot = self.running.pop(ref)
        members = [m.key for m in job.stored_jobs()]
        for key in members:
            graph.stopped(key)
        slot.busy = None
        try:
            out = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as e:
            # Its actor is gone for good (node removed, restarts used up): the job
            # itself did nothing wrong, so it runs again elsewhere (a pack's members
            # that were stored are found so and not trained again).
            self.pool.kill(slot)
            for key in members:
                recovery.actor_lost(key, e)
            return
        except Exception as e:
            for key in members:
                recovery.job_raised(key, e, slot.name)
            return
        finally:
            if slot.dedicated and slot in ex.pool:
                self.pool.kill(slot)
        status = out["status"]
        for key in members:
            own = Recovery.member_status(out, key)  # a pack: each member's own
            ex.stats[own] += 1
            self.eta.stopped(key, settled=own in ("ran", "cached"),
                             measured=own == "ran" and len(members) == 1)
            ex.placement[key] = {k: out.get(k) for k in ("worker", "node_id", "pid")}
            if own == "ran":
                ex.ran.append(key)
                # a record per job that ran, a pack's members each named
                log.info("ran %s on %s in %.1f s%s", job_label(graph.jobs[key]), slot.name,
                         out.get("seconds", 0.0), packed_note(len(members)))
            elif own == "leased":
                # Another sweep computes it: other ready work goes first; looked at
                # again later.
                log.info("%s is being computed by another sweep; running other jobs "
                         "meanwhile", job_label(graph.jobs[key]))
                self.elsewhere[key] = time.monotonic() + ex.poll_s
        if "loads" in out:
            ex.workers[out["worker"]] = {**ex.workers.get(out["worker"], {}),
                                         "loads": out["loads"]}
        if status == "oom" and not out.get("share"):
            out = {**out, "share": self.pool.share or 1.0}
        # the same recovery as the in-process executor's
        recovery.answer_all(members, out)

    def look_elsewhere(self) -> None:
        """Jobs another sweep holds, due for a look: done once their artifact is there,
        runnable again once their lease is gone (released, or its holder dead or silent)."""
        now = time.monotonic()
        for key, due in list(self.elsewhere.items()):
            if due > now:
                continue
            job = self.graph.jobs[key]
            if self.store.has(key) and job.complete(self.store):
                del self.elsewhere[key]
                self.ex.stats["cached"] += 1
                self.eta.stopped(key, measured=False)  # no time of ours left on it
                self.graph.finish(key)
            elif held_elsewhere(self.store, key):
                self.elsewhere[key] = now + self.ex.poll_s
            else:
                del self.elsewhere[key]

    def counts(self) -> JobCounts:
        graph = self.graph
        return JobCounts(total=graph.added + self.cached, done=graph.finished + self.cached,
                         cached=self.cached + self.ex.stats["cached"],
                         running=len(graph.running), failed=len(graph.failed))

    def loop(self) -> None:
        graph, pool = self.graph, self.pool
        progress: Progress = open_progress(self.counts(), self.ex.progress, "raytda jobs (ray)",
                                           self.eta)
        try:
            while graph.pending:
                self.look_elsewhere()
                pool.follow_cluster(max(0, len(graph.ready) - len(self.elsewhere)))
                self.dispatch()
                starting = [s.started for s in pool.starting()]
                if not self.running and not starting and not self.ex.pool:
                    # Nothing alive: re-read the cluster now.
                    pool.follow_cluster(len(graph.ready), force=True)
                    if not self.ex.pool:
                        stuck = sorted(graph.pending)[:3]
                        raise RuntimeError(f"scheduler stalled with jobs pending: {stuck}")
                    continue
                if not self.running and not starting:
                    # Every ready job is another sweep's: wait a while, then look again.
                    time.sleep(self.ex.poll_s)
                    continue
                finished, _ = self.ray.wait([*self.running, *starting], num_returns=1,
                                            timeout=self.ex.poll_s)
                for ref in finished:
                    if ref in self.running:
                        self.answered(ref)
                    else:
                        pool.started(ref)
                progress.update(self.counts(), [job_label(j, 60)
                                                for j, _ in self.running.values()])
        except StoreError:
            # Every running job meets the same full or missing store soon: let them end
            # (briefly) so they drop their leases and temp files before their actors go.
            if self.running:
                self.ray.wait(list(self.running), num_returns=len(self.running),
                              timeout=STOP_GRACE_S)
            self.ex.stop_workers()
            raise
        except BaseException:
            # Actor tasks cannot be force-cancelled; killing the actors stops them.
            self.ex.stop_workers()
            raise
        finally:
            progress.update(self.counts())
            progress.close()
            pool.release()
        failed = self.recovery.failure()
        if failed is not None:
            raise failed
