"""Driver-side policy: how many actors a node holds and what memory each may use."""

from __future__ import annotations

from raytda.core.args import ComputeArgs
from raytda.run.policy import actor_compute_args, actors_per_node


def test_actors_per_node_counts_cpus_and_accelerator_shares():
    assert actors_per_node({"CPU": 16.0}, cpus=1) == 16
    assert actors_per_node({"CPU": 16.0}, cpus=3) == 5
    assert actors_per_node({"CPU": 16.0, "GPU": 1.0}, cpus=1, share=0.25) == 4
    assert actors_per_node({"CPU": 0.0}, cpus=1) == 1  # one placed there is alone


def test_each_actor_gets_the_node_budget_divided_by_the_node_actors():
    total = 8 << 30
    args = ComputeArgs(memory_budget_bytes=total)
    n = actors_per_node({"CPU": 16.0}, cpus=1)
    per_actor = actor_compute_args(args, n)
    assert per_actor.memory_budget_bytes == total // n
    caches = ("payload_cache_bytes", "proj_memory_bytes", "projector_cache_bytes",
              "model_cache_bytes", "score_chunk_bytes")
    # The node's actors together hold no more than the node's budget.
    assert n * sum(getattr(per_actor, c) for c in caches) <= total
    assert actor_compute_args(args, 1) == args
