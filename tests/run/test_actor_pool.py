"""Which ready job an idle actor takes (the node's timing slot and model affinity decide),
and how many actors each node holds.

The pool is built without Ray (``choose`` reads only the slots and the owner map;
``follow_cluster`` a fake ``ray.nodes()``), so these run in milliseconds."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from types import SimpleNamespace
from typing import Any

from raytda.run.actor_pool import ActorPool, ActorSlot


@dataclasses.dataclass(frozen=True)
class FakeJob:
    """What ``choose`` reads of a job: whether its time is a cost, its model and its
    work class."""

    key: str
    costed: bool
    model: str | None = None
    work_class: str | None = None
    holds_model: bool = False

    def affinity(self) -> str | None:
        return self.model


def pool_of(*slots: ActorSlot) -> ActorPool:
    pool = ActorPool.__new__(ActorPool)
    pool.ex = SimpleNamespace(pool=list(slots))
    pool.owner, pool.per_node, pool.core_bound, pool.calibrations = {}, {}, set(), {}
    return pool


def actor(name: str, node: str = "n1", ready: bool = True) -> ActorSlot:
    return ActorSlot(handle=None, name=name, share=0.0, started=None, node_id=node, ready=ready)


LDS = FakeJob("lds", costed=False)
BLOCK = FakeJob("block", costed=True, model="m0")


def test_nothing_is_handed_to_a_node_while_a_costed_job_runs_there() -> None:
    a, b = actor("a"), actor("b")
    pool = pool_of(a, b)
    pool.assign(b, BLOCK)
    assert pool.choose(a, [LDS, BLOCK]) is None
    # another node is not held by it
    c = actor("c", node="n2")
    pool.ex.pool.append(c)
    assert pool.choose(c, [BLOCK]) is BLOCK


def test_beside_uncosted_work_an_idle_actor_prefers_uncosted_work() -> None:
    a, b = actor("a"), actor("b")
    pool = pool_of(a, b)
    pool.assign(b, LDS)
    assert pool.choose(a, [BLOCK, LDS]) is LDS
    # with nothing else to do, the costed job still goes (it waits for the slot)
    assert pool.choose(a, [BLOCK]) is BLOCK


def test_an_idle_node_takes_costed_work_by_affinity() -> None:
    a, b = actor("a"), actor("b")
    pool = pool_of(a, b)
    pool.owner["m0"] = "a"
    assert pool.choose(a, [LDS, BLOCK]) is BLOCK  # its own model's job first
    assert pool.choose(b, [BLOCK, LDS]) is LDS  # nobody's job before another actor's


def test_a_work_class_runs_beside_others_once_it_was_timed_alone_on_the_node() -> None:
    first = FakeJob("block-0", costed=True, model="m0", work_class="block-x")
    second = FakeJob("block-1", costed=True, model="m1", work_class="block-x")
    other = FakeJob("block-y", costed=True, model="m2", work_class="block-y")
    a, b, c = actor("a"), actor("b"), actor("c", node="n2")
    pool = pool_of(a, b, c)
    assert pool.timing(first, "n1").exclusive  # nothing of its class timed there yet
    pool.assign(a, first)
    assert pool.choose(b, [second, LDS]) is None  # the calibration runs alone
    timing = a.timing
    a.busy, a.busy_alone, a.timing = None, False, None
    pool.finished(a, first, timing)
    # on its node, the class now runs beside others, charged the alone run's cost
    beside = pool.timing(second, "n1")
    assert not beside.exclusive and beside.calibration == "block-0"
    pool.assign(a, second)
    assert not a.busy_alone
    # beside it: work that runs beside others, or a job timed alone that unlocks such
    # work (a training, the first of another class); an evaluation only as the last resort
    evaluation = FakeJob("eval", costed=True)
    training = FakeJob("train", costed=True, holds_model=True)
    assert pool.choose(b, [evaluation, second]) is second
    assert pool.choose(b, [evaluation, training]) is training
    assert pool.choose(b, [LDS, second, training]) is training  # it unlocks a model's work
    assert pool.choose(b, [evaluation, other]) is other
    assert pool.choose(b, [evaluation]) is evaluation
    # another node times the class alone first
    assert pool.timing(second, "n2").exclusive and pool.choose(c, [second]) is second
    # uncosted work is shared, whatever its class, and calibrates nothing
    lds = FakeJob("lds-1", costed=False, work_class="lds")
    assert pool.timing(lds, "n1") == type(beside)(exclusive=False)
    pool.finished(b, lds, pool.timing(lds, "n1"))
    assert ("n1", "lds") not in pool.calibrations


def test_costed_work_waits_for_starting_actors() -> None:
    a, starting = actor("a"), actor("s", ready=False)
    starting.since = time.monotonic()
    pool = pool_of(a, starting)
    assert pool.choose(a, [BLOCK, LDS]) is LDS
    assert pool.choose(a, [BLOCK]) is None


def test_new_actors_are_steered_off_nodes_full_by_their_cores() -> None:
    # n1 declares 4 CPUs on 2 cores and holds 2 actors (one still starting, asked for n1);
    # n2's cores are not known: its room is what it declares
    a = actor("a", node="n1")
    s = actor("s", node=None, ready=False)
    s.target = "n1"
    pool = pool_of(a, s)
    room = {"n1": 2, "n2": 1}
    assert pool.target(room) is None  # no node declares more than it has: Ray chooses
    pool.core_bound = {"n1"}
    assert pool.target(room) == "n2"
    pool.ex.pool.append(actor("b", node="n2"))
    assert pool.target(room) is None  # every node full: Ray's choice (or the autoscaler)


class FakeRay:
    """What ``follow_cluster`` asks of Ray: the alive nodes; kills are recorded."""

    def __init__(self, nodes: dict[str, float]) -> None:
        self.node_list = [{"NodeID": nid, "Alive": True, "Resources": {"CPU": cpus}}
                          for nid, cpus in nodes.items()]
        self.killed: list[Any] = []

    def nodes(self) -> list[dict]:
        return self.node_list

    def kill(self, handle: Any, no_restart: bool = True) -> None:
        self.killed.append(handle)


def sized_pool(ray: FakeRay, cores: dict[str, int], *slots: ActorSlot) -> ActorPool:
    pool = pool_of(*slots)
    pool.ray, pool.cpus, pool.share, pool.cores = ray, 1, 0.0, cores
    pool.ex = SimpleNamespace(pool=list(slots), poll_s=1.0, max_workers=None,
                              accelerator="GPU", autoscale=False, stats=Counter())
    pool.next_poll, pool.requested = 0.0, -1
    started: list[str | None] = []
    pool.start = lambda share, target=None: started.append(target)  # type: ignore[method-assign]
    pool.started_targets = started  # type: ignore[attr-defined]
    return pool


def test_a_node_declaring_more_cpus_than_cores_keeps_one_actor_per_core() -> None:
    # `ray start --num-cpus=4` on two cores, four actors placed there by Ray: the two idle
    # ones go, the busy ones stay, and no new actor is asked for
    slots = [actor(n) for n in "abcd"]
    slots[0].busy = slots[1].busy = "job"
    ray = FakeRay({"n1": 4.0})
    pool = sized_pool(ray, {"n1": 2}, *slots)
    pool.follow_cluster(ready=10)
    assert [s.name for s in pool.ex.pool] == ["a", "b"]
    assert pool.capacity == 2 and pool.per_node == {"n1": 2}
    assert pool.started_targets == []
    # cores not known yet: the node holds what it declares, and the pool grows to it
    pool = sized_pool(FakeRay({"n1": 4.0}), {}, actor("a"))
    pool.follow_cluster(ready=10)
    assert pool.capacity == 4 and pool.started_targets == [None, None, None]


def test_new_actors_go_where_cores_are_free() -> None:
    # n1: 4 declared, 2 cores, 2 actors; n2: 2 declared, cores unknown, empty
    ray = FakeRay({"n1": 4.0, "n2": 2.0})
    pool = sized_pool(ray, {"n1": 2}, actor("a"), actor("b"))
    pool.follow_cluster(ready=10)
    assert pool.capacity == 4
    assert pool.core_bound == {"n1"}
    assert len(pool.started_targets) == 2  # the stub does not add slots: both see n2 free
    assert set(pool.started_targets) == {"n2"}
