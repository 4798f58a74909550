"""Checks of a Task against what a sweep will ask of it, before any work starts.

Each failure is one ``SpecError`` (or ``CheckpointError``) line saying what is wrong and
how to fix it; nothing is written before these checks pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from raytda.core.batch import describe
from raytda.core.network import Network
from raytda.data.check import TargetRule, check_targets, check_token_ids, scan
from raytda.data.samples import DictSamples
from raytda.ensembles import Ensemble
from raytda.ground_truth import GroundTruth
from raytda.methods import Method
from raytda.specs import SpecError
from raytda.task import Task


def check_output(task: Task, net, data) -> dict[str, TargetRule | None]:
    """The model runs on a batch of each split, and f and Q give one value per sample.

    Returns what each split's targets must be (:class:`TargetRule`, from the logits'
    shape) when the output reads them as class indices, for the row-by-row pass. Dict rows
    are ragged: their rule leaves the sequence dimensions' sizes open."""
    out = task.output()
    vocab = input_vocab(net.module)
    rules: dict[str, TargetRule | None] = {}
    for split in ("train", "test"):
        samples = getattr(data, split)
        probe = torch.arange(min(2, samples.n))
        try:
            x, y = samples.take(probe)
        except SpecError:
            raise
        except Exception:
            # rows that cannot be batched: the row-by-row check names the row and why
            scan(samples.subset(probe), split, f"task {task.name!r}", fingerprint=False)
            raise
        try:
            with torch.no_grad():
                logits = net(x)
        except Exception as e:
            raise SpecError(f"task {task.name!r}: the model fails on {split} rows 0..{len(x) - 1} "
                            f"(inputs {describe(x)}): "
                            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                            ) from None
        rules[split] = None
        if out.class_targets and isinstance(logits, torch.Tensor) and logits.ndim >= 2:
            row_shape = tuple(logits.shape[1:-1])
            if isinstance(samples, DictSamples):
                row_shape = (None,) * len(row_shape)
            rules[split] = TargetRule(int(logits.shape[-1]), row_shape, out.ignore_index,
                                      vocab if isinstance(samples, DictSamples) else None)
            # f and Q index the logits with y: a bad label must fail as a line, not in a gather
            check_targets(y, 0, rules[split], f"task {task.name!r}", split)
        for name, fn in (("f", out.f), ("Q", out.q)):
            try:
                v = fn(logits, y)
            except Exception as e:
                raise SpecError(f"task {task.name!r}: model output {out.name!r} {name} fails on "
                                f"a {split} batch of {len(x)} ({type(e).__name__}: {e})") from None
            if not isinstance(v, torch.Tensor) or tuple(v.shape) != (len(x),):
                shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
                raise SpecError(f"task {task.name!r}: model output {out.name!r} {name} must "
                                f"return one value per sample, shape ({len(x)},), got {shape}")
    return rules


def input_vocab(module: torch.nn.Module) -> int | None:
    """Size of the model's token vocabulary: its input embeddings' rows (a Hugging Face
    model says which module they are; otherwise its one ``nn.Embedding``). None when not
    known (no embedding, or several and no way to tell which takes the ids)."""
    get = getattr(module, "get_input_embeddings", None)
    if callable(get):
        try:
            emb = get()
        except Exception:  # NotImplementedError on models without token inputs
            emb = None
        if isinstance(emb, torch.nn.Embedding):
            return int(emb.num_embeddings)
    embeddings = [m for m in module.modules() if isinstance(m, torch.nn.Embedding)]
    return int(embeddings[0].num_embeddings) if len(embeddings) == 1 else None


def check_ragged_sites(task: Task, net: Network, data, ensembles: Sequence[Ensemble]) -> None:
    """With dict rows of ragged lengths, a dropout mask must not depend on a row's length
    (one mask serves every row of a member): the sites probed on a train row of another
    length than row 0 must have row 0's mask shapes."""
    from raytda.core.network import discover_sites

    train = data.train
    if not isinstance(train, DictSamples) or not net.sites or not any(
            e.kind_class.uses_masks for e in ensembles):
        return
    shapes = {k: v.shape for k, v in _one_row(train, 0).items()}
    for r in range(1, min(train.n, 16)):
        x = _one_row(train, r)
        if {k: v.shape for k, v in x.items()} == shapes:
            continue
        others = discover_sites(net.module, x, lambda m, b: task.forward(m, b),
                                task.dropout_mask_dims)
        for a, b in zip(net.sites, others):
            if a.shape != b.shape:
                raise SpecError(
                    f"task {task.name!r}: dropout site {a.name!r} has a mask shape that "
                    f"changes with a row's length ({a.shape} on train row 0, {b.shape} on "
                    f"train row {r}), so one mask cannot serve every row; set "
                    f"Task.dropout_mask_dims (1: the same hidden units dropped at every "
                    f"position) or that module's p to 0")
        return


def _one_row(samples: DictSamples, row: int):
    """Row ``row`` as a batch of one input (no padding beyond what the collate adds)."""
    return samples.take(torch.tensor([row]))[0]


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
    """Read every row of the Task's data (checked, fingerprinted: the keys of this run
    say which data they were made from), build its model and probe it for what the sweep
    needs. Reads and writes no artifact."""
    from raytda.tasks.cache import load_task_data, remember, scan_task_data

    data = load_task_data(task)
    if data.n_train < 2 or data.n_test < 1:
        raise SpecError(f"task {task.name!r} needs at least 2 train and 1 test samples, got "
                        f"{data.n_train} and {data.n_test}")
    try:
        model = task.build_model()
        # An id past the embedding would fail inside the model, as an IndexError.
        for split in ("train", "test"):
            samples = getattr(data, split)
            if not isinstance(samples, DictSamples):
                continue
            probe = torch.arange(min(2, samples.n))
            try:
                x, _ = samples.take(probe)
            except Exception:  # rows that cannot be batched: the row-by-row check names it
                scan(samples.subset(probe), split, f"task {task.name!r}", fingerprint=False)
                continue
            check_token_ids(x, 0, input_vocab(model), f"task {task.name!r}", split)
        net = Network(model, data.train.example(),
                      lambda m, x: task.forward(m, x), task.dropout_mask_dims).eval()
    except SpecError:
        raise
    except Exception as e:
        raise SpecError(f"task {task.name!r}: the model fails on train row 0 "
                        f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                        ) from None
    rules = check_output(task, net, data)
    remember(task, data, scan_task_data(task, data, rules))
    check_checkpoints(task)
    for ens in ensembles:
        ens.kind_class.check_model(ens, task, net)
    check_ragged_sites(task, net, data, ensembles)
    if isinstance(lds, GroundTruth):
        lds.check(data.n_train, data.n_test)
