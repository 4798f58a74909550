"""The Ray executor's actors: how many, where, and which ready job each one takes.

Why not ``ray.util.ActorPool``: it hands the next value to whichever actor is idle, from a
fixed list of actors that all hold the same reservation. The executor needs more:

* affinity: a model's Q and block jobs go to the actor that trained or loaded the model
  (it holds the weights and the projections it built), an idle actor takes a job nobody
  holds next, and only then steals another actor's, rather than wait;
* no waiting for timing: a job's cost is the CPU or device time it used
  (:mod:`raytda.core.costs`), which what runs beside it does not change, so every idle
  actor takes the best ready job at once;
* GPU shares per job: a job that ran out of CUDA memory gets an actor of its own with a
  larger share, which goes when the job is done;
* a pool that follows the cluster: its size is re-read from the cluster's resources
  during the run (at most one actor per ``cpus`` CPUs and GPU share, and per ``cpus`` of
  the cores a node really has, once known: :func:`raytda.run.policy.node_room`), the
  autoscaler is asked for what the ready jobs could use, and actors on a node that went
  away are dropped (their job is requeued) and replaced wherever the scheduler puts them;
* per-node memory: each job's memory budget is the node's divided among the actors that
  node holds (:func:`raytda.run.policy.actor_compute_args`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from raytda.plan.job import Job
from raytda.run.policy import node_room, usable_cores

if TYPE_CHECKING:
    from raytda.run.ray_executor import RayExecutor

log = logging.getLogger(__name__)


@dataclasses.dataclass(eq=False)
class ActorSlot:
    """One actor of the pool, as the driver sees it."""

    handle: Any
    name: str
    share: float
    started: Any  # ref of its first info() call: the actor is usable once it resolves
    node_id: str | None = None
    ready: bool = False
    busy: str | None = None  # key of the job it runs
    dedicated: str | None = None  # a job retried on a larger share, alone on this actor
    target: str | None = None  # the node it was asked for (softly), if any


class ActorPool:
    """The actors of one ``execute`` call. ``ex.pool`` (the executor's list of slots)
    outlives it when the executor keeps its workers between plans.

    Args:
        ex: the executor, for its settings (``max_workers``, ``max_retries``,
            ``accelerator``, ``autoscale``, ``poll_s``) and its ``pool`` and ``stats``.
        actor_cls: the Ray actor class (``ray.remote(RaytdaWorker)``).
        cpus: CPUs each actor holds (the most any job of the plan reserves).
        share: GPU share each actor holds (the most any job of the plan asks for).
        log_level: the level the actors log at (the driver's).
    """

    def __init__(self, ex: RayExecutor, actor_cls: Any, cpus: int, share: float,
                 log_level: int) -> None:
        import ray

        self.ray, self.ex, self.actor_cls = ray, ex, actor_cls
        self.cpus, self.share, self.log_level = cpus, share, log_level
        self.owner: dict[str, str] = {}  # affinity key -> actor name
        self.per_node: dict[str, int] = {}  # node id -> actors of this pool it holds
        # node id -> the cores it really has: the driver's own node from the start, the
        # others once an actor there has answered (Ray's resources say only what was
        # declared, e.g. ``ray start --num-cpus=4`` on two cores)
        self.cores: dict[str, int] = {w["node_id"]: w["cores"] for w in ex.workers.values()
                                      if w.get("cores") and w.get("node_id")}
        if not ray.util.client.ray.is_connected():  # a Ray client's cores are not a node's
            self.cores[ray.get_runtime_context().get_node_id()] = usable_cores()
        self.capacity = 0
        self.core_bound: set[str] = set()  # nodes that declare more CPUs than cores
        self.requested = -1  # actors last asked of the autoscaler
        self.next_poll = 0.0
        self.serial = len(ex.pool)
        for slot in list(ex.pool):  # actors kept from an earlier plan must still fit
            if slot.share != share or slot.dedicated:
                self.kill(slot)

    def starting(self) -> list[ActorSlot]:
        return [s for s in self.ex.pool if not s.ready]

    # ---------------------------------------------------------------- actors

    def start(self, share: float, dedicated: str | None = None,
              target: str | None = None) -> ActorSlot:
        """Ask Ray for one more actor (on node ``target`` if it can, else where Ray
        chooses); it is usable once ``slot.started`` resolves."""
        ex = self.ex
        name = f"raytda-worker-{os.getpid()}-{id(ex) % 10_000:04d}-{self.serial}"
        self.serial += 1
        opts = ex.actor_options(share, self.cpus)
        if target is not None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(target, soft=True)
        handle = self.actor_cls.options(name=name, **opts).remote(
            name, share, ex.accelerator, self.log_level)
        slot = ActorSlot(handle, name, share, handle.info.remote(), dedicated=dedicated,
                         target=target)
        ex.pool.append(slot)
        ex.stats["actors_started"] += 1
        log.debug("asked for actor %s (%s)", name, ex.bundle(share, self.cpus))
        return slot

    def started(self, ref: Any) -> None:
        """An actor's first answer came back: it is ready, or it could not start."""
        slot = next(s for s in self.ex.pool if s.started == ref)
        try:
            info = self.ray.get(ref)
        except Exception as e:
            log.warning("%s could not start: %s", slot.name, str(e).strip().splitlines()[-1:])
            self.kill(slot)
            return
        slot.node_id, slot.ready = info["node_id"], True
        self.ex.workers[slot.name] = info
        if info.get("cores") and self.cores.get(slot.node_id) != info["cores"]:
            self.cores[slot.node_id] = info["cores"]
            self.next_poll = 0.0  # the node may hold fewer actors than its resources say
        log.info("actor %s ready on node %s (pid %s)", slot.name, slot.node_id[:8],
                 info.get("pid"))

    def kill(self, slot: ActorSlot) -> None:
        """Stop ``slot``'s actor for good; the models it held have no owner any more."""
        if slot in self.ex.pool:
            self.ex.pool.remove(slot)
        try:
            self.ray.kill(slot.handle, no_restart=True)
        except Exception:  # already gone
            log.debug("could not kill %s", slot.name, exc_info=True)
        for a, owner in list(self.owner.items()):
            if owner == slot.name:
                del self.owner[a]

    # ---------------------------------------------------------------- size

    def follow_cluster(self, ready: int, force: bool = False) -> None:
        """Re-read the cluster (at most every ``poll_s``): resize the pool to what it
        holds now and to the work there is (``ready`` jobs plus busy actors), drop actors
        on nodes that are gone, and ask the autoscaler for what the work could use."""
        ray, ex = self.ray, self.ex
        now = time.monotonic()
        if now < self.next_poll and not force:
            return
        self.next_poll = now + ex.poll_s
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        alive = {n["NodeID"] for n in nodes}
        room = {n["NodeID"]: node_room(n.get("Resources", {}), self.cpus, self.share,
                                       ex.accelerator, self.cores.get(n["NodeID"]))
                for n in nodes}
        # nodes whose cores hold fewer actors than their declared resources: Ray's own
        # placement would fill them by what they declared, so new actors are steered
        self.core_bound = {n["NodeID"] for n in nodes if room[n["NodeID"]] < node_room(
            n.get("Resources", {}), self.cpus, self.share, ex.accelerator)}
        cap = sum(room.values())
        if ex.max_workers:
            cap = min(cap, ex.max_workers)
        self.capacity = cap
        self.per_node = {nid: max(1, r) for nid, r in room.items()}
        for slot in list(ex.pool):
            if slot.node_id is not None and slot.node_id not in alive:
                # Its node is gone: Ray would restart it elsewhere only once resources
                # free up; the driver requeues its job on the actors that are left.
                log.warning("node %s of %s is gone; its running job is requeued",
                            slot.node_id[:8], slot.name)
                ex.stats["lost_actors"] += 1
                self.kill(slot)
        # A node holding more idle actors than its cores (it declared more CPUs than it
        # has, and Ray placed them by what it declared) gives the extra ones back.
        for nid, r in room.items():
            extra = sum(1 for s in ex.pool if s.node_id == nid and not s.dedicated) - max(1, r)
            for slot in [s for s in ex.pool if s.node_id == nid and not s.dedicated
                         and s.busy is None][:max(0, extra)]:
                log.info("%s stopped: node %s has %s cores", slot.name, nid[:8],
                         self.cores.get(nid))
                self.kill(slot)
                ex.stats["actors_stopped"] += 1
        pool = [s for s in ex.pool if not s.dedicated]
        demand = ready + sum(1 for s in pool if s.busy)
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
            self.start(self.share, target=self.target(room))

    def target(self, room: dict[str, int]) -> str | None:
        """The node the next actor should go to: None (Ray's choice) unless some node
        would take more actors by its declared CPUs than by its cores; then the node
        with the most room left, counting the actors there and those asked for it."""
        if not self.core_bound:
            return None
        placed: dict[str, int] = {}
        for s in self.ex.pool:
            nid = s.node_id if s.ready else s.target
            if nid is not None and not s.dedicated:
                placed[nid] = placed.get(nid, 0) + 1
        free = {nid: r - placed.get(nid, 0) for nid, r in room.items()}
        best = max(free, key=free.get, default=None)
        return best if best is not None and free[best] > 0 else None

    def request(self, n: int) -> None:
        """Ask the autoscaler for ``n`` actors' resources (0: nothing more)."""
        try:
            from ray.autoscaler.sdk import request_resources

            request_resources(bundles=[self.ex.bundle(self.share, self.cpus)] * n)
            self.requested = n
        except Exception:  # no autoscaler API on this cluster: nothing to ask
            log.debug("request_resources failed", exc_info=True)
            self.ex.autoscale = False

    def release(self) -> None:
        """The run is over: withdraw what was asked of the autoscaler."""
        if self.ex.autoscale and self.requested > 0:
            self.request(0)

    # ---------------------------------------------------------------- placement

    def choose(self, slot: ActorSlot, ready: Iterable[Job]) -> Job | None:
        """The job ``slot`` should run, of ``ready``: a model's training first (it unlocks
        that model's servings), then one of its own models' jobs, then one nobody holds,
        then another actor's (an idle actor steals rather than wait)."""
        best: tuple[tuple[int, int], Job] | None = None
        for job in ready:
            a = job.affinity()
            owner = self.owner.get(a) if a is not None else None
            rank = 0 if owner == slot.name and a is not None else 1 if owner is None else 2
            # a model first: its training unlocks its servings
            order = (int(not job.holds_model), rank)
            if best is None or order < best[0]:
                best = (order, job)
        return None if best is None else best[1]

    def assign(self, slot: ActorSlot, job: Job) -> int:
        """``slot`` runs ``job`` now: it owns the job's model from here on if nobody does.
        Returns how many actors share ``slot``'s node (for its memory budget)."""
        a = job.affinity()
        if a is not None and a not in self.owner:
            self.owner[a] = slot.name
        slot.busy = job.key
        # A node not seen yet (just joined) counts as the most crowded one known.
        return self.per_node.get(slot.node_id) or max(self.per_node.values(), default=1)

    def stop_all(self) -> None:
        """Kill every actor of the pool (what they held is gone; the store keeps all)."""
        for slot in list(self.ex.pool):
            self.kill(slot)
