"""Which ready job an idle actor takes: the node's timing slot and model affinity decide.

The pool is built without Ray (``choose`` reads only the slots and the owner map), so
these run in milliseconds."""

from __future__ import annotations

import dataclasses
import time
from types import SimpleNamespace

from raytda.run.actor_pool import ActorPool, ActorSlot


@dataclasses.dataclass(frozen=True)
class FakeJob:
    """What ``choose`` reads of a job: whether its time is a cost, and its model."""

    key: str
    costed: bool
    model: str | None = None

    def affinity(self) -> str | None:
        return self.model


def pool_of(*slots: ActorSlot) -> ActorPool:
    pool = ActorPool.__new__(ActorPool)
    pool.ex = SimpleNamespace(pool=list(slots))
    pool.owner, pool.per_node, pool.core_bound = {}, {}, set()
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
