"""The Ray driver's DAG bookkeeping, without Ray: what is ready when, what a failure
blocks, and what a requeue or a missing input brings back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from raytda.plan.job import Job
from raytda.run.job_graph import JobGraph


@dataclass(frozen=True, repr=False)
class Node(Job):
    """A job named ``name`` that needs ``inputs``."""

    name: str
    inputs: tuple[Job, ...] = ()
    kind: str = field(default="node", init=False)

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "inputs": [j.key for j in self.inputs]}

    def deps(self) -> tuple[Job, ...]:
        return self.inputs


class Store:
    def __init__(self, keys: set[str] = frozenset()) -> None:
        self.keys = set(keys)

    def has(self, key: str) -> bool:
        return key in self.keys


def names(graph: JobGraph) -> list[str]:
    return [j.name for j in graph.ready_jobs()]


# a -> b -> d, a -> c (independent of b), e alone
A = Node("a")
B = Node("b", (A,))
C = Node("c", (A,))
D = Node("d", (B,))
E = Node("e")
ALL = [A, B, C, D, E]


def test_a_job_is_ready_once_its_inputs_finish():
    g = JobGraph(ALL, ALL, (), Store())
    assert names(g) == ["a", "e"] and g.added == 5
    g.start(A.key)
    assert names(g) == ["e"]  # running jobs are not offered again
    g.stopped(A.key)
    g.finish(A.key)
    # b and c become ready together, in no promised order between them
    assert names(g)[0] == "e" and sorted(names(g)[1:]) == ["b", "c"]
    assert g.settled == 1 and g.pending == {B.key, C.key, D.key, E.key}


def test_a_failure_blocks_its_dependents_only():
    g = JobGraph(ALL, ALL, (), Store())
    g.finish(A.key)
    failed = g.fail(B.key, "boom")
    assert failed == [B.key, D.key]
    assert g.failed[D.key] == f"blocked: input {B.key} failed"
    assert names(g) == ["e", "c"]  # c and e still run
    assert g.settled == 3 and D.key not in g.pending


def test_cached_inputs_are_not_run_and_missing_ones_are_pulled_in():
    # b is to run; a is neither planned nor in the store (deleted after planning).
    g = JobGraph([B], [B], (), Store())
    assert names(g) == ["a"] and g.added == 2
    g = JobGraph([B], [B], (), Store({A.key}))
    assert names(g) == ["b"] and g.added == 1


def test_a_requeued_job_waits_for_its_rebuilt_input_and_is_not_counted_twice():
    g = JobGraph(ALL, ALL, (), Store())
    g.finish(A.key)
    g.start(B.key)
    g.stopped(B.key)
    # b found a corrupt: a is wanted again, b requeued behind it.
    g.done.discard(A.key)
    g.want(A)
    g.requeue(B.key)
    assert g.added == 6  # a's rebuild is a new job, b's rerun is not
    assert "b" not in names(g) and "a" in names(g)
    g.finish(A.key)
    assert "b" in names(g)
