"""Which ready job an idle actor takes (trainings first, then model affinity), and how
many actors each node holds.

The pool is built without Ray (``choose`` reads only the slots and the owner map;
``follow_cluster`` a fake ``ray.nodes()``), so these run in milliseconds."""

from __future__ import annotations

import dataclasses
from collections import Counter
from types import SimpleNamespace
from typing import Any

from raytda.run.actor_pool import ActorPool, ActorSlot


@dataclasses.dataclass(frozen=True)
class FakeJob:
    """What ``choose`` reads of a job: its model and whether it makes one."""

    key: str
    model: str | None = None
    holds_model: bool = False

    def affinity(self) -> str | None:
        return self.model


def pool_of(*slots: ActorSlot) -> ActorPool:
    pool = ActorPool.__new__(ActorPool)
    pool.ex = SimpleNamespace(pool=list(slots))
    pool.owner, pool.per_node, pool.core_bound = {}, {}, set()
    return pool


def actor(name: str, node: str = "n1", ready: bool = True) -> ActorSlot:
    return ActorSlot(handle=None, name=name, share=0.0, started=None, node_id=node, ready=ready)


LDS = FakeJob("lds")
BLOCK = FakeJob("block", model="m0")
EVALUATION = FakeJob("eval")
TRAINING = FakeJob("train", model="m1", holds_model=True)


def test_a_busy_neighbour_holds_nothing_back() -> None:
    """Costs are CPU or device time, which a job beside it does not change: an idle actor
    takes ready work whatever its node's other actors run, and while actors start."""
    a, b, starting = actor("a"), actor("b"), actor("s", ready=False)
    pool = pool_of(a, b, starting)
    pool.assign(b, BLOCK)
    assert pool.choose(a, [BLOCK]) is BLOCK
    assert pool.choose(a, [EVALUATION]) is EVALUATION


def test_trainings_go_first_then_affinity() -> None:
    a, b = actor("a"), actor("b")
    pool = pool_of(a, b)
    pool.owner["m0"] = "a"
    assert pool.choose(a, [LDS, BLOCK]) is BLOCK  # its own model's job first
    assert pool.choose(b, [BLOCK, LDS]) is LDS  # nobody's job before another actor's
    assert pool.choose(a, [BLOCK, TRAINING]) is TRAINING  # it unlocks a model's servings
    pool.assign(b, TRAINING)
    assert pool.owner["m1"] == "b"


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
