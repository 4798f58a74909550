"""EK-FAC on GPT-2 small (124M): raytda's fit and scores against kronfluence 1.0.1's on the
same model, data, loss and damping, with one plain forward + backward as the unit.

    python benchmarks/ekfac_gpt2_small.py --n-train 8 --n-test 4 --seq 32 [--device cuda]

``ekfac_vs_kronfluence(...)`` is the piece ``bench_gpt2_small.py`` can call on its own
model and windows. Both sides: the empirical Fisher (the data's labels: raytda's default
draws labels from the model, kronfluence's from its own RNG), kronfluence's damping
heuristic, the summed per-sample next-token cross-entropy for the curvature and the
sequence log-likelihood for the scores. kronfluence tracks only ``nn.Linear``, so its copy
of the model has each ``Conv1D`` replaced by the same map as an ``nn.Linear`` and tracks
exactly those 48 layers; raytda factors the same 48 (the tied embedding / head and the
LayerNorms are unfactored on its side, untracked on kronfluence's). Model: GPT-2 small's
config, seed-0 initialisation (nothing downloaded); data: seeded random token windows.

No results yet: the first CPU run (2026-12-07, 8 train / 4 test windows of 32, load 5-6)
was stopped after 12 minutes still inside raytda's fit, in the float64
eigendecompositions of the 96 factors (up to 3073 x 3073); it is meant for a GPU.
"""

from __future__ import annotations

import argparse
import copy
import logging
import tempfile
import time

import torch
from torch import nn
from torch.utils.data import Dataset


class _Windows(Dataset):
    def __init__(self, ids: torch.Tensor) -> None:
        self.ids = ids

    def __len__(self) -> int:
        return self.ids.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def ekfac_vs_kronfluence(lm: nn.Module, train_ids: torch.Tensor, test_ids: torch.Tensor,
                         device: str = "cpu", batch: int = 4) -> dict[str, float | None]:
    """Seconds (and CUDA peak GiB) of raytda's EK-FAC fit and scores and kronfluence's,
    one plain forward + backward per sample, and the two score matrices' agreement."""
    import kronfluence as kf
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from transformers.pytorch_utils import Conv1D

    from raytda.core.batch import Batch
    from raytda.core.ekfac import EKFAC
    from raytda.core.network import Network
    from raytda.core.outputs import CAUSAL_LM, next_token_cross_entropy, next_token_loglik
    from raytda.data.samples import TensorSamples

    logging.getLogger("kronfluence").setLevel(logging.ERROR)
    dev = torch.device(device)
    lm = lm.to(dev).eval()
    out: dict[str, float | None] = {}

    # one plain forward + backward per sample (the unit), batches of ``batch``
    _sync(dev)
    t = time.perf_counter()
    for i in range(0, train_ids.shape[0], batch):
        x = train_ids[i:i + batch].to(dev)
        next_token_cross_entropy(lm(input_ids=x).logits, x).backward()
    _sync(dev)
    lm.zero_grad(set_to_none=True)
    out["plain_s_per_sample"] = (time.perf_counter() - t) / train_ids.shape[0]

    # raytda
    net = Network(lm, Batch({"input_ids": train_ids[:1].to(dev)}), mask_dims=1).eval()
    train = TensorSamples(Batch({"input_ids": train_ids}), train_ids.clone())
    test = TensorSamples(Batch({"input_ids": test_ids}), test_ids.clone())
    _reset_peak(dev)
    t = time.perf_counter()
    ek = EKFAC(net, device=dev)
    factors = ek.fit(train, next_token_cross_entropy, fisher="empirical", batch_size=batch)
    _sync(dev)
    out["raytda_fit_s"], out["raytda_fit_peak_gib"] = time.perf_counter() - t, _peak(dev)
    _reset_peak(dev)
    t = time.perf_counter()
    ours = ek.scores(factors, test, train, CAUSAL_LM, damping=None, batch_size=batch)
    _sync(dev)
    out["raytda_score_s"], out["raytda_score_peak_gib"] = time.perf_counter() - t, _peak(dev)
    out["layers"] = len(ek.layers)

    # kronfluence, Conv1D as nn.Linear
    linear = copy.deepcopy(lm)
    tracked = []
    for name, mod in list(linear.named_modules()):
        if isinstance(mod, Conv1D):
            lin = nn.Linear(*mod.weight.shape, device=dev)
            with torch.no_grad():
                lin.weight.copy_(mod.weight.T)
                lin.bias.copy_(mod.bias)
            parent, _, child = name.rpartition(".")
            setattr(linear.get_submodule(parent), child, lin)
            tracked.append(name)

    class Curvature(kf.Task):
        def compute_train_loss(self, b, model, sample=False):
            x = b["input_ids"]
            return next_token_cross_entropy(model(input_ids=x).logits, b["labels"]) * x.shape[0]

        def compute_measurement(self, b, model):
            return next_token_loglik(model(input_ids=b["input_ids"]).logits, b["labels"]).sum()

        def get_influence_tracked_modules(self):
            return tracked

    class Scores(Curvature):
        def compute_train_loss(self, b, model, sample=False):
            return self.compute_measurement(b, model)

    with tempfile.TemporaryDirectory() as tmp:
        def analyzer(task):
            return kf.Analyzer("gpt2", kf.prepare_model(copy.deepcopy(linear), task), task,
                               cpu=dev.type == "cpu", disable_tqdm=True, output_dir=tmp)

        _reset_peak(dev)
        t = time.perf_counter()
        analyzer(Curvature()).fit_all_factors(
            "ekfac", _Windows(train_ids), per_device_batch_size=batch,
            factor_args=FactorArguments(strategy="ekfac", use_empirical_fisher=True))
        _sync(dev)
        out["kronfluence_fit_s"] = time.perf_counter() - t
        out["kronfluence_fit_peak_gib"] = _peak(dev)
        scorer = analyzer(Scores())
        _reset_peak(dev)
        t = time.perf_counter()
        scorer.compute_pairwise_scores("s", "ekfac", _Windows(test_ids), _Windows(train_ids),
                                       per_device_query_batch_size=batch,
                                       per_device_train_batch_size=batch,
                                       score_args=ScoreArguments(damping_factor=None))
        _sync(dev)
        out["kronfluence_score_s"] = time.perf_counter() - t
        out["kronfluence_score_peak_gib"] = _peak(dev)
        theirs = scorer.load_pairwise_scores("s")["all_modules"].double().cpu()
    ours = ours.double()
    out["max_rel_diff"] = float((ours - theirs).abs().max() / theirs.abs().max())
    out["pearson"] = float(torch.corrcoef(torch.stack([ours.flatten(), theirs.flatten()]))[0, 1])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-train", type=int, default=8)
    p.add_argument("--n-test", type=int, default=4)
    p.add_argument("--seq", type=int, default=32)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    lm = GPT2LMHeadModel(GPT2Config(attn_implementation="eager", attn_pdrop=0.0,
                                    resid_pdrop=0.0, embd_pdrop=0.0))
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, lm.config.vocab_size, (a.n_train + a.n_test, a.seq), generator=gen)
    res = ekfac_vs_kronfluence(lm, ids[:a.n_train], ids[a.n_train:], a.device, a.batch)
    for k, v in res.items():
        print(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}")


if __name__ == "__main__":
    main()
