"""Bodies of the training jobs: ensemble models, imported checkpoints, LDS models, LoRA
base models and adapters."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from raytda.core.args import ComputeArgs, torch_threads
from raytda.core.costs import measure, stopwatch
from raytda.core.train import half_subset, load_state, loop_clock, seeded_init, state_snapshot
from raytda.specs import Recipe
from raytda.store import ArtifactStore
from raytda.task import Task
from raytda.work.weights import FINAL, stored_module

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from raytda.ensembles.lora import TrainAdapter, TrainBase
    from raytda.plan.models import ImportModel, LDSModel, TrainModel


def fresh_model(task: Task, seed: int) -> torch.nn.Module:
    """``task.build_model()`` with its initial weights drawn from ``seed``."""
    seeded_init(seed)
    return task.build_model()


def fit_task(task: Task, samples, seed: int, args: ComputeArgs, recipe: Recipe | None = None
             ) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, float]]:
    """Train a fresh model with ``task.train``: ({'final' or 'epochE': state}, its cost
    fields: ``train_time_s`` in CPU or device seconds, ``train_wall_s``)."""
    model = fresh_model(task, seed).to(args.device)
    with torch_threads(args.train_threads), loop_clock() as loops:
        t0 = time.perf_counter()
        spent = stopwatch(args.device)
        states = task.train(model, samples, seed, args.device, recipe) or {}
        # raytda's trainer: its training loops; a Task's own train(): all of it.
        cost = spent()
        wall = time.perf_counter() - t0
    if loops:
        cost, wall = sum(x.cost_s for x in loops), sum(x.wall_s for x in loops)
    seconds = {"train_time_s": cost, "train_wall_s": wall}
    final_epoch = (recipe or task.recipe).epochs if (recipe or task.recipe) else None
    out = {FINAL: states.get(final_epoch) if final_epoch in states else state_snapshot(model)}
    out.update({f"epoch{e}": st for e, st in states.items() if e != final_epoch})
    return out, seconds


def put_states(store: ArtifactStore, job, states: dict[str, dict[str, torch.Tensor]],
               meta: dict) -> None:
    tensors = {f"{tag}/{k}": v for tag, st in states.items() for k, v in st.items()}
    params = sum(v.numel() for v in states[FINAL].values())
    store.put(job.key, tensors, {"params": params, "checkpoints": sorted(states), **meta},
              job.spec())


def train_model(job: TrainModel, store: ArtifactStore, args: ComputeArgs) -> None:
    data = job.task.data()
    samples = data.train.subset(half_subset(data.n_train, job.subset_seed))
    with measure(args.device) as mem:  # its peak enters the configuration's peak_mem
        states, seconds = fit_task(job.task, samples, job.seed, args)
    put_states(store, job, states, {**seconds, "peak_bytes": mem.peak_bytes})


def read_checkpoint(ckpt) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors file, a torch file, or a state dict."""
    if not isinstance(ckpt, (str, Path)):
        # Copies: runs may hand the same tensors in several places (safetensors refuses
        # shared storage), and the caller may go on changing its own.
        return {k: v.detach().cpu().clone() for k, v in ckpt.items()}
    from raytda.core.checkpoint import CheckpointError, load_checkpoint

    path = Path(ckpt)
    if path.suffix in (".safetensors", ".st"):
        return load_checkpoint(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a state dict")
    return state


def import_model(job: ImportModel, store: ArtifactStore, args: ComputeArgs) -> None:
    run = job.task.checkpoints()[job.index]
    states = {}
    for pos, ckpt in enumerate(run, start=1):
        state = read_checkpoint(ckpt)
        load_state(job.task.build_model(), state, f"{job.task.name}'s model (run {job.index}, "
                                                 f"checkpoint {pos})")
        states[FINAL if pos == len(run) else f"epoch{pos}"] = state
    # Not trained here: no training time is spent on this configuration.
    put_states(store, job, states, {"train_time_s": 0.0, "train_wall_s": 0.0, "imported": True})


def lds_model(job: LDSModel, store: ArtifactStore, args: ComputeArgs) -> None:
    from raytda.core.lds import lds_subsets

    task = job.task
    data = task.data()
    rows = np.flatnonzero(lds_subsets(data.n_train, job.lds)[job.subset])
    states, seconds = fit_task(task, data.train.subset(rows), job.seed, args)
    put_lds_outputs(store, job, states[FINAL], args, seconds)


def put_lds_outputs(store: ArtifactStore, job: LDSModel, final: dict[str, torch.Tensor],
                    args: ComputeArgs, meta: dict) -> None:
    """Store an LDS model's f on the test set from its final weights."""
    from raytda.core.grads import samples_outputs

    task = job.task
    net = task.network(load_state(task.build_model(), final))
    f, _ = samples_outputs(net, task.data().test, None, "test", args.forward_batch,
                           args.device, task.output())
    # f on the test set: the margin, or the log-likelihood for generative tasks (the
    # tensor keeps its historical name for both).
    store.put(job.key, {"test_margins": f}, meta, job.spec())


def train_base(job: TrainBase, store: ArtifactStore, args: ComputeArgs) -> None:
    with measure(args.device) as mem:
        states, seconds = fit_task(job.task, job.task.data().train, job.seed, args, job.recipe)
    put_states(store, job, {FINAL: states[FINAL]}, {**seconds, "peak_bytes": mem.peak_bytes})


def train_adapter(job: TrainAdapter, store: ArtifactStore, args: ComputeArgs) -> None:
    from raytda.core.lora import train_adapter as fine_tune

    task = job.task
    data = task.data()
    samples = data.train.subset(half_subset(data.n_train, job.subset_seed))
    base = stored_module(store, task, job.base.key)
    with torch_threads(args.train_threads), measure(args.device) as mem, loop_clock() as loops:
        trained = fine_tune(base, task.lora_spec, job.recipe, samples, job.seed, args.device,
                            task.loss, task.forward)
    store.put(job.key, trained.state, {"train_time_s": trained.train_time_s,
                                       "train_wall_s": sum(x.wall_s for x in loops),
                                       "params": trained.n_params,
                                       "peak_bytes": mem.peak_bytes}, job.spec())


def train_pack(jobs, store: ArtifactStore, args: ComputeArgs) -> None:
    """Train compatible training jobs (one ``Job.pack_key``) as one stacked pack and store
    each as its own artifact, as its own job would: same key, spec and tensors (bit for
    bit, see ``tests/core/test_stacked.py``), with ``train_time_s`` its share of the
    pack's training loop, ``packed`` the pack's size, ``pack_train_time_s`` the whole loop
    and ``peak_bytes`` the pack's peak. Each job class says how its pack trains
    (``Job.run_pack``)."""
    from raytda.core.stacked import NotStackable, bytes_per_model, models_per_pack, stacking_obstacle

    jobs = list(jobs)
    keys = {j.pack_key() for j in jobs}
    if len(keys) != 1 or None in keys:
        raise ValueError(f"jobs {[j.describe() for j in jobs][:3]} cannot share a pack")
    task = jobs[0].task
    x, y = task.data().train.take(torch.arange(1))
    model = task.build_model()
    why = stacking_obstacle(model, x)
    if why is not None:  # e.g. BatchNorm, dict batches: the same jobs, one by one
        log.info("%s trains its models one by one: %s", task.name, why)
        for job in jobs:
            job.run(store, args)
        return
    # Cut to what half the memory budget holds (an adapter pack counts whole models:
    # an overestimate, so it stays within the budget).
    recipe = getattr(jobs[0], "recipe", None) or task.recipe
    per = bytes_per_model(model, recipe, x, task.loss, task.forward, y_example=y)
    size = models_per_pack(per, args.memory_budget_bytes // 2)
    for start in range(0, len(jobs), size):
        try:
            jobs[start].run_pack(jobs[start:start + size], store, args)
        except NotStackable as e:  # found in its first step: nothing of it was stored
            log.info("%s trains its models one by one: %s", task.name, e)
            for job in jobs[start:]:
                job.run(store, args)
            return


def _packed(n: int, seconds: float, wall_s: float, peak: int) -> dict:
    """Each packed model's record: its share of the pack's cost (CPU or device seconds)
    and wall time, the pack's size, its whole loop's cost and the pack's peak memory."""
    return {"train_time_s": seconds / n, "train_wall_s": wall_s / n, "packed": n,
            "pack_train_time_s": seconds, "peak_bytes": peak}


def lds_pack(jobs: list[LDSModel], store: ArtifactStore, args: ComputeArgs) -> None:
    from raytda.core.lds import lds_subsets
    from raytda.core.stacked import Member, train_stacked

    task = jobs[0].task
    data = task.data()
    members = [Member(np.flatnonzero(lds_subsets(data.n_train, j.lds)[j.subset]), j.seed)
               for j in jobs]
    with torch_threads(args.train_threads), measure(args.device) as mem:
        result = train_stacked(task.build_model, task.recipe, data.train, members,
                               args.device, task.loss, task.forward)
    meta = _packed(len(jobs), result.train_time_s, result.train_wall_s, mem.peak_bytes)
    for job, states in zip(jobs, result.states):
        put_lds_outputs(store, job, states[task.recipe.epochs], args, meta)


def model_pack(jobs: list[TrainModel], store: ArtifactStore, args: ComputeArgs) -> None:
    from raytda.core.stacked import Member, train_stacked

    task = jobs[0].task
    data = task.data()
    recipe = task.recipe
    members = [Member(half_subset(data.n_train, j.subset_seed), j.seed) for j in jobs]
    with torch_threads(args.train_threads), measure(args.device) as mem:
        result = train_stacked(task.build_model, recipe, data.train, members, args.device,
                               task.loss, task.forward)
    meta = _packed(len(jobs), result.train_time_s, result.train_wall_s, mem.peak_bytes)
    for job, states in zip(jobs, result.states):
        # As fit_task names them: the last epoch is FINAL, the others epochE.
        tagged = {FINAL if e == recipe.epochs else f"epoch{e}": st for e, st in states.items()}
        put_states(store, job, tagged, meta)


def adapter_pack(jobs: list[TrainAdapter], store: ArtifactStore, args: ComputeArgs) -> None:
    from raytda.core.lora import train_adapters_stacked
    from raytda.core.stacked import Member

    task = jobs[0].task
    data = task.data()
    members = [Member(half_subset(data.n_train, j.subset_seed), j.seed) for j in jobs]
    base = stored_module(store, task, jobs[0].base.key)
    with torch_threads(args.train_threads), measure(args.device) as mem:
        trained = train_adapters_stacked(base, task.lora_spec, jobs[0].recipe, data.train,
                                         members, args.device, task.loss, task.forward)
    seconds = trained[0].train_time_s * len(jobs)
    for job, adapter in zip(jobs, trained):
        store.put(job.key, adapter.state, {**_packed(len(jobs), seconds, mem.wall_s,
                                                    mem.peak_bytes),
                                           "params": adapter.n_params}, job.spec())
