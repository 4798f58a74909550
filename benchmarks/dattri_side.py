"""dattri 0.3.0's side of the benchmarks: its TRAKAttributor on raytda's models and data."""

from __future__ import annotations

import os
import time

os.environ.setdefault("TQDM_DISABLE", "1")  # dattri's progress bars would swamp the tables

import torch  # noqa: E402
from torch import nn  # noqa: E402

from raytda.core.network import Network  # noqa: E402
from raytda.core.outputs import margin  # noqa: E402
from raytda.data import Dataset  # noqa: E402


def margin_target(model: nn.Module):
    """The margin f for dattri, in its (params, (x, y)) single-sample convention."""
    def f(params, data):
        x, y = data
        logits = torch.func.functional_call(model, params, (x.unsqueeze(0),))
        return margin(logits, y.unsqueeze(0))[0]
    return f


def correct_probability(model: nn.Module):
    """p_y for dattri's Q = 1 - p_y."""
    def p(params, data):
        x, y = data
        logits = torch.func.functional_call(model, params, (x.unsqueeze(0),))
        return torch.softmax(logits, dim=-1)[0, y]
    return p


class FixedMaskMLP(nn.Module):
    """The MLP with one fixed dropout mask held in buffers.

    dattri ensembles over a list of checkpoints of one model; putting the mask in the state
    dict makes each (model, mask) member one checkpoint, with the same parameters (and so
    the same gradient layout) as raytda's masked member.
    """

    def __init__(self, model: nn.Module, example: torch.Tensor) -> None:
        super().__init__()
        self.net = Network(model, example)
        for s, w in enumerate(self.net.mask_sizes):
            self.register_buffer(f"mask{s}", torch.ones(w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        masks = tuple(getattr(self, f"mask{s}") for s in range(len(self.net.mask_sizes)))
        return self.net(x, masks=masks)


def dattri_available() -> bool:
    try:
        import dattri  # noqa: F401
    except ImportError:
        return False
    return True


def serve_dattri(model: nn.Module, checkpoints: list[dict[str, torch.Tensor]], data: Dataset,
                 k: int, batch: int) -> tuple[torch.Tensor, float]:
    """(scores m x n, seconds): dattri 0.3.0 TRAKAttributor, cache + attribute, on the CPU.

    ``model`` only supplies the architecture; dattri loads each checkpoint into it.
    """
    from dattri.algorithm.trak import TRAKAttributor
    from dattri.task import AttributionTask
    from torch.utils.data import DataLoader, TensorDataset

    train = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=batch,
                       shuffle=False)
    test = DataLoader(TensorDataset(data.x_test, data.y_test), batch_size=batch, shuffle=False)
    t0 = time.perf_counter()
    f = margin_target(model)
    task = AttributionTask(loss_func=f, model=model, checkpoints=checkpoints, target_func=f)
    attributor = TRAKAttributor(
        task=task, correct_probability_func=correct_probability(model), device="cpu",
        projector_kwargs={"proj_dim": k, "proj_max_batch_size": 32, "proj_seed": 0,
                          "device": "cpu"})
    attributor.cache(train)
    scores = attributor.attribute(test)
    return scores.T.contiguous(), time.perf_counter() - t0


def dattri_cpu_matrix(p: int, k: int, seed: int = 0, ensemble_id: int = 0,
                      block: int = 100) -> torch.Tensor:
    """The Gaussian matrix dattri 0.3.0's CPU projector multiplies by (up to its scaling).

    Reconstructed from its documented behaviour: k columns in blocks of ``block``; block b
    is a fresh (p x block) normal draw from a CPU generator seeded with
    seed + 1000 b + 100000 ensemble_id, truncated to the columns still needed. Used only
    to check that both libraries compute the same scores when given the same projection.
    """
    out = torch.empty(p, k)
    for b in range(-(-k // block)):
        gen = torch.Generator().manual_seed(seed + 1000 * b + 100000 * ensemble_id)
        cols = torch.empty(p, block).normal_(generator=gen)
        w = min(block, k - b * block)
        out[:, b * block:b * block + w] = cols[:, :w]
    return out
