"""Spread featurization on a simulated two-node Ray cluster (loopback only), run by
``test_shard_spread.py`` in its own process, since the test session holds a Ray runtime
of its own. Asserts inside and exits non-zero on the first failure.

The cluster: a head with no CPUs (the driver only) and two worker nodes with one CPU
each, so the executor's pool is one actor per node. Members are built in train shards of
20 rows (ComputeArgs.train_shard_rows), so each of the toy task's members is three shard
jobs and one reduction. A shard's artifact takes half a second to store (a slow store),
so an idle actor takes the next shard while the other still writes its own (and the
second actor, started on demand, is up before the shards are all written). Checks: the
shards of a member ran on both nodes and both actors (each record's ``node_id`` and
``worker``), the scores equal those of the same sweep run in one process, and each
member's serving cost is the sum of its jobs' times (work, not the parallel wall clock).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

# Every node on 127.0.0.1: Ray otherwise swaps a loopback address for the host's external
# one (Ray's own switch for single-host clusters; children inherit it).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

from raytda import Sweep  # noqa: E402
from raytda.core.args import ComputeArgs  # noqa: E402
from raytda.ensembles import Ensemble  # noqa: E402
from raytda.methods import Method  # noqa: E402
from raytda.run.ray_executor import RayExecutor  # noqa: E402
from raytda.store import ArtifactStore  # noqa: E402
from raytda.tasks import get_task  # noqa: E402

ENSEMBLES = (Ensemble("naive", 1), Ensemble("dropout", 1, 2, mask_mode="per-sample"))
COMPUTE = ComputeArgs(train_shard_rows=20)
# Long enough that the second node's actor, started when the first shards are ready
# (a process importing torch: seconds on a busy machine), is up while the first actor is
# still writing: work is no longer held back for starting actors (costs are CPU time).
SHARD_PUT_S = 2.0


class SlowShardStore(ArtifactStore):
    """A store whose writes of train shards take ``SHARD_PUT_S`` longer."""

    def __reduce__(self):
        return (SlowShardStore, (self.uri,))

    def put(self, key, *a, **kw) -> None:
        if key.startswith("shard-"):
            time.sleep(SHARD_PUT_S)
        super().put(key, *a, **kw)


def check(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(what)


def sweep(root: Path, executor="local") -> Sweep:
    s = Sweep(get_task("toy-mlp"), Method("trak", proj_dim=16), ENSEMBLES, lds=None,
              store=str(root), progress=False, compute=COMPUTE, executor=executor)
    s.store = SlowShardStore(str(root))
    return s


def main(root: str) -> int:
    import ray
    import ray._private.utils
    import torch
    from ray.cluster_utils import Cluster

    # Do not advertise this cluster as "the one on this machine": a plain ray.init() by
    # anyone else sharing the host would join it.
    ray._private.utils.write_ray_address = lambda *a, **k: None
    out = Path(root)
    one = sweep(out / "one")
    one.run()
    reference = {e.label: one.scores(e) for e in ENSEMBLES}
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "node_ip_address": "127.0.0.1"})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        cluster.wait_for_nodes()
        ex = RayExecutor(COMPUTE, progress=False, shutdown=False, poll_s=0.25)
        spread = sweep(out / "spread", ex)
        plan = spread.plan()
        spread.run()
        store = spread.store
        blocks = [j for j in plan.jobs if j.kind == "block"]
        check(len(blocks) == 3 and all(len(b.shards()) == 3 for b in blocks),
              f"expected 3 members of 3 shards: {[b.describe() for b in blocks]}")
        spread_members = 0
        for b in blocks:
            metas = [store.meta(s.key) for s in b.shards()]
            nodes = {m["node_id"] for m in metas}
            workers = {m["worker"] for m in metas}
            print(f"{b.describe()}: shards on nodes {sorted(n[:8] for n in nodes)}, "
                  f"actors {sorted(workers)}")
            spread_members += len(nodes) == 2 and len(workers) == 2
            meta = store.meta(b.key)
            shard_s = [m["serve_time_s"] for m in metas]
            check(meta["shard_serve_s"] == shard_s, "the reduction lists its shards' times")
            check(abs(meta["serve_time_s"] - meta["reduce_s"] - sum(shard_s)) < 1e-9,
                  f"serving is not the work of all its jobs: {meta}")
        check(spread_members >= 1, "no member's shards ran on both nodes")
        for e in ENSEMBLES:
            got, ref = spread.scores(e), reference[e.label]
            diff = float((got - ref).abs().max() / ref.abs().max())
            # measured bit-identical (same shards, same float64 reduction order); 1e-5 as
            # for every sharded-vs-whole comparison (tests/work/test_train_shards.py)
            check(diff < 1e-5, f"{e.label}: spread scores differ from one actor's by {diff}")
            check(torch.isfinite(got).all().item(), "scores are finite")
        ex.stop_workers()
    finally:
        ray.shutdown()
        cluster.shutdown()
    print(f"spread checks passed: {spread_members} of {len(blocks)} members on both nodes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
