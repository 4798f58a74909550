"""Checks of a Task against what a sweep will ask of it, before any work starts.

Each failure is one ``SpecError`` (or ``CheckpointError``) line saying what is wrong and
how to fix it; nothing is written before these checks pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from raytda.ensembles import Ensemble
from raytda.ground_truth import GroundTruth
from raytda.methods import Method
from raytda.specs import SpecError
from raytda.task import Task


def check_output(task: Task, net, data) -> None:
    """f and Q must give one value per sample of a batch."""
    x, y = data.train.take(torch.arange(min(2, data.n_train)))
    with torch.no_grad():
        logits = net(x)
    out = task.output()
    for name, fn in (("f", out.f), ("Q", out.q)):
        try:
            v = fn(logits, y)
        except Exception as e:
            raise SpecError(f"task {task.name!r}: model output {out.name!r} {name} fails on a "
                            f"batch of {len(x)} ({type(e).__name__}: {e})") from None
        if not isinstance(v, torch.Tensor) or tuple(v.shape) != (len(x),):
            shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise SpecError(f"task {task.name!r}: model output {out.name!r} {name} must return "
                            f"one value per sample, shape ({len(x)},), got {shape}")


def check_checkpoints(task: Task) -> None:
    """Every checkpoint of every run loads into the Task's model."""
    from raytda.core.train import check_state
    from raytda.work.train import read_checkpoint

    runs = task.checkpoints()
    if runs is None:
        return
    if not runs or any(len(r) == 0 for r in runs):
        raise SpecError(f"task {task.name!r}: checkpoints() must give at least one run, each "
                        f"with at least one checkpoint")
    model = task.build_model()
    for i, run in enumerate(runs):
        for j, ckpt in enumerate(run, start=1):
            src = ckpt if isinstance(ckpt, (str, Path)) else "a state dict"
            what = f"{task.name!r}'s model (run {i}, checkpoint {j}: {src})"
            check_state(model, read_checkpoint(ckpt), what)


def check_task(task: Task, ensembles: Sequence[Ensemble], methods: Sequence[Method],
               lds) -> None:
    """Load the Task's data, build its model and probe it for what the sweep needs."""
    data = task.data()
    if data.n_train < 2 or data.n_test < 1:
        raise SpecError(f"task {task.name!r} needs at least 2 train and 1 test samples, got "
                        f"{data.n_train} and {data.n_test}")
    check_checkpoints(task)
    net = task.network(task.build_model()).eval()
    check_output(task, net, data)
    masked = [e.label for e in ensembles if e.kind_class.uses_masks]
    if masked and not net.sites:
        raise SpecError(f"{masked[0]} needs dropout, but task {task.name!r}'s model has no "
                        f"nn.Dropout module with p > 0; add one or use another ensemble kind")
    if any(e.kind_class.uses_lora for e in ensembles):
        names = {n.rsplit(".", 1)[-1] for n, _ in net.module.named_modules()}
        missing = [t for t in task.lora_spec.targets if t not in names]
        if missing:
            raise SpecError(f"task {task.name!r}: LoRA targets {missing} are not modules of "
                            f"its model; set Task.lora = LoRASpec(targets=(...)) to module names")
    if isinstance(lds, GroundTruth):
        lds.check(data.n_train, data.n_test)
