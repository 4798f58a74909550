"""Driver-side policy: how many actors a node holds and what memory each may use."""

from __future__ import annotations

from raytda.core.args import ComputeArgs
from raytda.run.policy import actor_compute_args, node_room, usable_cores


def test_node_room_counts_cpus_and_accelerator_shares():
    assert node_room({"CPU": 16.0}, cpus=1) == 16
    assert node_room({"CPU": 16.0}, cpus=3) == 5
    assert node_room({"CPU": 16.0, "GPU": 1.0}, cpus=1, share=0.25) == 4


def test_a_node_holds_no_more_actors_than_its_cores():
    # `ray start --num-cpus=4` on two cores: two actors, not four
    assert node_room({"CPU": 4.0}, cpus=1, cores=2) == 2
    assert node_room({"CPU": 4.0}, cpus=2, cores=2) == 1
    assert node_room({"CPU": 4.0}, cpus=1) == 4  # cores not known yet: as declared
    assert node_room({"CPU": 2.0}, cpus=1, cores=16) == 2  # declared fewer: as declared
    assert node_room({"CPU": 8.0, "GPU": 1.0}, cpus=1, share=0.25, cores=16) == 4
    assert node_room({"CPU": 0.0}, cpus=1, cores=8) == 0  # a head without CPUs holds none
    assert node_room({"CPU": 4.0}, cpus=4, cores=2) == 1  # a job wider than the node
    assert usable_cores() >= 1


def test_each_actor_gets_the_node_budget_divided_by_the_node_actors():
    total = 8 << 30
    args = ComputeArgs(memory_budget_bytes=total)
    n = node_room({"CPU": 16.0}, cpus=1)
    per_actor = actor_compute_args(args, n)
    assert per_actor.memory_budget_bytes == total // n
    caches = ("payload_cache_bytes", "proj_memory_bytes", "projector_cache_bytes",
              "model_cache_bytes", "score_chunk_bytes")
    # The node's actors together hold no more than the node's budget.
    assert n * sum(getattr(per_actor, c) for c in caches) <= total
    assert actor_compute_args(args, 1) == args


TASK_SCRIPT = '''
from functools import lru_cache


@lru_cache(maxsize=2)
def rows(n):
    return list(range(n))


class ScriptTask:
    def data(self):
        return rows(3)
'''


def test_a_script_tasks_lru_cache_reaches_a_worker_that_cannot_import_the_script(tmp_path):
    """A Task whose script caches its data with functools.lru_cache: workers that cannot
    import the script (every Ray worker, every Serve replica) must still load the Task."""
    import importlib.util
    import subprocess
    import sys
    from types import SimpleNamespace

    from ray import cloudpickle

    from raytda.run.policy import ship_task_code

    script = tmp_path / "user_script_with_cache.py"
    script.write_text(TASK_SCRIPT)
    spec = importlib.util.spec_from_file_location(script.stem, script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[script.stem] = module
    try:
        spec.loader.exec_module(module)
        ship_task_code(SimpleNamespace(jobs=[SimpleNamespace(task=module.ScriptTask())]))
        payload = tmp_path / "task.pkl"
        payload.write_bytes(cloudpickle.dumps(module.ScriptTask()))
    finally:
        cloudpickle.unregister_pickle_by_value(module)
        del sys.modules[script.stem]
    # A fresh interpreter elsewhere: the script's directory is not on its path.
    elsewhere = tmp_path / "worker"
    elsewhere.mkdir()
    out = subprocess.run(
        [sys.executable, "-c", "import pickle, sys; "
         f"print(pickle.loads(open({str(payload)!r}, 'rb').read()).data())"],
        cwd=elsewhere, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[0, 1, 2]"
