"""A simulated multi-node Ray cluster on this machine (loopback only), run by
``test_cluster.py`` in its own process, since the test session holds a Ray runtime of its
own. Asserts inside and exits non-zero on the first failure.

The cluster: a head with no CPUs (the driver only) and three worker nodes with one CPU
and one ``fake_gpu`` each, a custom resource standing in for a GPU; the executor is told
to request it (``accelerator="fake_gpu"``, one whole share per actor), so one actor runs
per node. One store directory is shared by all nodes (they are all this machine).

Checks, in order:

1. an undisturbed sweep on the cluster equals the in-process one; its jobs ran on more
   than one node (from each artifact's ``node_id``); the state API (``ray list actors``)
   listed the raytda actors while it ran, and lists each job's actor call by the job's
   description (``ray list tasks``); each actor built each distinct projection once;
2. a node removed in the middle of a sweep costs only the job it was running: the sweep
   ends with the same results, every job ran to completion once, and no artifact that
   had finished was written again;
3. a job that runs out of (CUDA) memory on half a device is retried on a whole one.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
# Every node on 127.0.0.1: Ray otherwise swaps a loopback address for the host's external
# one (Ray's own switch for single-host clusters; children inherit it).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

from ray_helpers import counts, lds_by_label, make_sweep, mtimes  # noqa: E402

from raytda.plan.job import Job  # noqa: E402
from raytda.plan.planner import Plan, make_plan  # noqa: E402
from raytda.plan.seeds import projection_seed  # noqa: E402
from raytda.results import collect_results  # noqa: E402
from raytda.run.progress import job_label  # noqa: E402
from raytda.run.ray_executor import RayExecutor  # noqa: E402
from raytda.store import ArtifactStore  # noqa: E402

ACCEL = "fake_gpu"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def executor(**kw: Any) -> RayExecutor:
    return RayExecutor(progress=False, shutdown=False, accelerator=ACCEL, gpu_fraction=1.0,
                       poll_s=0.25, **kw)


def check(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(what)


@dataclass(frozen=True, repr=False)
class NeedsWholeDevice(Job):
    """A model-kind job that runs out of memory unless it holds a whole accelerator."""

    task: Any
    kind: str = field(default="model", init=False)

    def spec(self) -> dict[str, Any]:
        return {"probe": "oom", "task": self.task.key}

    def run(self, store, args) -> None:
        import ray
        import torch

        share = ray.get_runtime_context().get_assigned_resources().get(ACCEL, 0.0)
        if share < 1.0:
            raise torch.cuda.OutOfMemoryError(f"needs a whole device, holds {share}")
        store.put(self.key, {"x": torch.zeros(1)}, {"share": share}, self.spec())


def undisturbed(root: Path, reference: dict[str, float], address: str) -> None:
    import ray
    from ray.util.state import list_actors

    from raytda.ensembles import Ensemble

    ex = executor(keep_workers=True)
    sweep = make_sweep(root / "a", executor=ex)
    plan = make_plan(sweep.spec, sweep.store)  # every job: the store is empty
    seen: set[str] = set()
    stop = threading.Event()

    def watch() -> None:  # `ray list actors` while the sweep runs
        while not stop.is_set():
            try:
                for a in list_actors(address=address, filters=[("state", "=", "ALIVE")]):
                    if a.class_name == "RaytdaWorker":
                        seen.add(a.name)
            except Exception as e:  # the dashboard may still be starting
                print("list_actors:", e, file=sys.stderr)
            stop.wait(0.5)

    t_end = time.monotonic() + 60
    while True:  # the state API answers once the head's dashboard is up
        try:
            list_actors(address=address, limit=1)
            break
        except Exception:
            if time.monotonic() > t_end:
                raise
            time.sleep(0.5)
    t = threading.Thread(target=watch, daemon=True)
    t.start()
    # A small part first, then every actor up (a warm actor starts in seconds; toy jobs
    # take milliseconds, so the first one up would otherwise take them all).
    part = make_sweep(root / "a", executor=ex)
    part.spec = part.spec.replace(ensembles=(Ensemble("naive", 1),))
    part.run()
    ray.get([s.started for s in ex.pool])
    df = sweep.run()
    ex.stop_workers()
    stop.set()
    t.join()
    check(lds_by_label(df) == reference, f"cluster results differ: {lds_by_label(df)}")
    nodes = {sweep.store.meta(j.key)["node_id"] for j in plan.jobs}
    check(len(nodes) >= 2, f"every job ran on one node: {nodes}")
    check(seen and seen <= set(ex.workers), f"state API saw {seen}, pool {set(ex.workers)}")
    check(set(collect_results(plan, sweep.store)["measured_on"]) == {f"cpu x1 + {ACCEL} x1"},
          "measured_on should name the actor's reservation")
    # Each actor built each distinct projection it used once (toy data has no zero
    # inputs, so one matrix per projection).
    used: dict[str, set[int]] = {}
    built: dict[str, int] = {}
    for j in plan.jobs:
        if j.kind == "block":
            meta = sweep.store.meta(j.key)
            used.setdefault(meta["worker"], set()).add(projection_seed(j.model, j.member))
            built[meta["worker"]] = max(built.get(meta["worker"], 0),
                                        meta["loads"]["projections_built"])
    check(bool(used) and built == {w: len(s) for w, s in used.items()},
          f"builds {built} vs used {used}")
    # training jobs may run packed: one call, named after its first member
    names = task_names(address, {job_label(j) for j in plan.jobs if j.pack_key() is None})
    check(all(listed(label, names) for label in ("train model 0 of toy-mlp",
                                                  "LDS model 0.0 of toy-mlp"))
          and "RaytdaWorker.run" not in names, f"the state API lists tasks {sorted(names)}")
    print(f"undisturbed: {len(plan.jobs)} jobs on {len(nodes)} nodes, actors {sorted(seen)}")


def listed(label: str, names: set[str]) -> bool:
    """Whether a call is named after the job ``label``: its own, or a pack's that it leads
    (``train N packed: <label>, ...``)."""
    return any(n == label or n.partition(" packed: ")[2].startswith(label + ",")
               for n in names)


def task_names(address: str, expected: set[str], limit_s: float = 60.0) -> set[str]:
    """Names of the actor calls the state API lists, once it lists every ``expected``
    one (task events reach it a moment after the tasks end) or ``limit_s`` is up."""
    from ray.util.state import list_tasks

    t_end = time.monotonic() + limit_s
    while True:
        names = {t.name for t in list_tasks(address=address, limit=10_000,
                                            filters=[("type", "=", "ACTOR_TASK")])}
        if expected <= names or time.monotonic() > t_end:
            return names
        time.sleep(0.5)


def node_removed(cluster, root: Path, reference: dict[str, float], ref_counts) -> None:
    ex = executor()
    sweep = make_sweep(root / "b", executor=ex)
    todo = len(make_plan(sweep.spec, sweep.store).todo)
    store_dir = Path(sweep.store.root)
    removed: dict[str, Any] = {}

    def remove_busy_node() -> None:
        t_end = time.monotonic() + 120
        while time.monotonic() < t_end:
            busy = [s for s in list(ex.pool) if s.busy and s.node_id]
            if len(mtimes(store_dir)) >= 4 and busy:
                node = next((n for n in cluster.worker_nodes
                             if n.node_id == busy[0].node_id), None)
                if node is not None:
                    removed["finished"] = mtimes(store_dir)
                    removed["job"] = busy[0].busy
                    cluster.remove_node(node)
                    return
            time.sleep(0.05)

    t = threading.Thread(target=remove_busy_node, daemon=True)
    t.start()
    df = sweep.run()
    t.join()
    check("finished" in removed, "no node was removed during the sweep")
    check(lds_by_label(df) == reference, f"results after node loss differ: {lds_by_label(df)}")
    check(counts(sweep.store) == ref_counts, f"artifacts {counts(sweep.store)}")
    # Each job ran to completion once; the lost node's job may have saved its artifact
    # before the node went, and its rerun then finds it ("cached") instead of redoing it.
    check(len(ex.ran) == len(set(ex.ran)) and len(ex.ran) + ex.stats["cached"] == todo
          and ex.stats["cached"] <= ex.stats["requeued"],
          f"{len(ex.ran)} runs, {ex.stats['cached']} found done, for {todo} jobs")
    check(ex.stats["requeued"] <= 1, f"requeued {ex.stats['requeued']} jobs for one node")
    now = mtimes(store_dir)
    for path, stamp in removed["finished"].items():
        check(now[path] == stamp, f"{path} was recomputed after the node loss")
    print(f"node removed while running {removed['job']}: requeued {ex.stats['requeued']}, "
          f"lost actors {ex.stats['lost_actors']}")


def oom_retry(root: Path, task) -> None:
    ex = RayExecutor(progress=False, shutdown=False, accelerator=ACCEL, gpu_fraction=0.5,
                     poll_s=0.25)
    store = ArtifactStore(str(root / "c"))
    job = NeedsWholeDevice(task)
    ex.execute(Plan(jobs=[job], evaluations=[], cached=set()), store)
    meta = store.meta(job.key)
    check(ex.stats["oom"] == 1 and meta["share"] == 1.0, f"{dict(ex.stats)} {meta}")
    check(meta["resources"] == f"cpu x1 + {ACCEL} x1", meta["resources"])
    print("oom on half a device, retried on a whole one")


def main(root: str) -> int:
    import ray
    import ray._private.utils
    from ray.cluster_utils import Cluster

    # Do not advertise this cluster as "the one on this machine": a plain ray.init() by
    # anyone else sharing the host would join it.
    ray._private.utils.write_ray_address = lambda *a, **k: None
    out = Path(root)
    ref_sweep = make_sweep(out / "ref")
    reference = lds_by_label(ref_sweep.run())
    ref_counts = counts(ref_sweep.store)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": True, "dashboard_port": free_port(),
        "node_ip_address": "127.0.0.1"})
    try:
        for _ in range(3):
            cluster.add_node(num_cpus=1, resources={ACCEL: 1}, node_ip_address="127.0.0.1")
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        cluster.wait_for_nodes()
        # The state API is asked of this cluster by address: another Ray instance on the
        # host (the test session's own, say) would otherwise make the lookup ambiguous.
        undisturbed(out, reference, cluster.address)
        node_removed(cluster, out, reference, ref_counts)
        oom_retry(out, ref_sweep.spec.tasks[0])
    finally:
        ray.shutdown()
        cluster.shutdown()
    print("cluster checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
