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
LayerNorms are unfactored on its side, the position embedding frozen, all untracked on
kronfluence's). Model: GPT-2 small's
config, seed-0 initialisation (nothing downloaded); data: seeded random token windows.

Results: ``benchmarks/results/ekfac_gpt2_small_2026-12-07.md`` (CPU, one thread a side:
the 96 float64 eigendecompositions are 74-90% of either fit; with 2 threads on 2 loaded
cores LAPACK's eigh was up to 100x slower, hence ``--threads``).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
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
    _reset_rss_peak()


def _rss() -> int:
    """This process's resident set now, bytes (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _rss_peak() -> int | None:
    """This process's RSS high-water mark (VmHWM), bytes; None off Linux."""
    try:
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None


def _reset_rss_peak() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0: "5" to clear_refs), so each phase's
    peak is its own; where that is refused the peaks are running maxima (said in the
    result as ``rss_peak_reset``)."""
    global _RESET_OK
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        _RESET_OK = False


_RESET_OK = True


class _EighClock:
    """Seconds and count of ``torch.linalg.eigh`` calls while active: both sides' fits
    call it by that name (kronfluence's factor/eigen.py, raytda's core/ekfac.py), so one
    wrapper times the eigendecompositions of either, float64 on both."""

    def __init__(self, side: str = "", log: bool = False) -> None:
        self.seconds, self.calls, self.largest = 0.0, 0, 0
        self.side, self.log = side, log

    def __enter__(self) -> _EighClock:
        self._orig = torch.linalg.eigh

        def timed(m, *args, **kwargs):
            t = time.perf_counter()
            r = self._orig(m, *args, **kwargs)
            self.seconds += time.perf_counter() - t
            self.calls += 1
            self.largest = max(self.largest, m.shape[-1])
            if self.log:  # progress of a long CPU run, one line a call
                print(f"  {self.side} eigh {self.calls}: n {m.shape[-1]} {m.dtype} "
                      f"{time.perf_counter() - t:.2f} s", flush=True)
            return r

        torch.linalg.eigh = timed
        return self

    def __exit__(self, *exc) -> None:
        torch.linalg.eigh = self._orig


def _phase(out: dict, name: str, dev: torch.device, start: float, rss0: int,
           log: bool = False) -> None:
    """Record a phase's seconds and peaks: CUDA peak GiB, RSS high-water GiB, and its
    growth over the RSS at the phase's start."""
    _sync(dev)
    out[f"{name}_s"] = time.perf_counter() - start
    out[f"{name}_peak_gib"] = _peak(dev)
    hwm = _rss_peak()
    out[f"{name}_rss_peak_gib"] = None if hwm is None else hwm / 2**30
    out[f"{name}_rss_growth_gib"] = None if hwm is None else (hwm - rss0) / 2**30
    if log:
        print(f"{name}: " + ", ".join(f"{k[len(name) + 1:]} {v:.4g}" for k, v in out.items()
                                      if k.startswith(name) and v is not None), flush=True)


def ekfac_vs_kronfluence(lm: nn.Module, train_ids: torch.Tensor, test_ids: torch.Tensor,
                         device: str = "cpu", batch: int = 4, log: bool = False
                         ) -> dict[str, float | None]:
    """Seconds and peak memory (CUDA GiB; the process's RSS high-water mark and its growth
    over the phase, GiB) of raytda's EK-FAC fit and scores and kronfluence's, one plain
    forward + backward per sample, the eigendecompositions' share of each fit, and the
    two score matrices' agreement. ``log``: print each eigh and phase as it ends."""
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

    # LAPACK's first eigh pays a one-off set-up (seconds, measured): pay it outside both
    torch.linalg.eigh(torch.eye(8, dtype=torch.float64, device=dev))
    # one plain forward + backward per sample (the unit), batches of ``batch``
    _sync(dev)
    _reset_peak(dev)
    rss0, t = _rss(), time.perf_counter()
    for i in range(0, train_ids.shape[0], batch):
        x = train_ids[i:i + batch].to(dev)
        next_token_cross_entropy(lm(input_ids=x).logits, x).backward()
    _phase(out, "plain", dev, t, rss0, log)
    lm.zero_grad(set_to_none=True)
    out["plain_s_per_sample"] = out["plain_s"] / train_ids.shape[0]

    # raytda. kronfluence tracks nn.Linear only; raytda also factors untied embeddings
    # (GPT-2's wpe), so every embedding is frozen here and both sides score the same 48
    # layers (wte, tied to lm_head, is unfactored by raytda in any case)
    for mod in lm.modules():
        if isinstance(mod, nn.Embedding):
            mod.weight.requires_grad_(False)
    net = Network(lm, Batch({"input_ids": train_ids[:1].to(dev)}), mask_dims=1).eval()
    train = TensorSamples(Batch({"input_ids": train_ids}), train_ids.clone())
    test = TensorSamples(Batch({"input_ids": test_ids}), test_ids.clone())
    _reset_peak(dev)
    rss0, t = _rss(), time.perf_counter()
    ek = EKFAC(net, device=dev)
    with _EighClock("raytda", log) as eig:
        factors = ek.fit(train, next_token_cross_entropy, fisher="empirical", batch_size=batch)
        _phase(out, "raytda_fit", dev, t, rss0, log)
    out["raytda_eigh_s"], out["raytda_eigh_calls"] = eig.seconds, eig.calls
    out["raytda_eigh_largest"] = eig.largest
    _reset_peak(dev)
    rss0, t = _rss(), time.perf_counter()
    ours = ek.scores(factors, test, train, CAUSAL_LM, damping=None, batch_size=batch)
    _phase(out, "raytda_score", dev, t, rss0, log)
    out["layers"] = len(ek.layers)
    del factors

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
        # kronfluence passes these by keyword (batch=, model=, sample=)
        def compute_train_loss(self, batch, model, sample=False):
            x = batch["input_ids"]
            return (next_token_cross_entropy(model(input_ids=x).logits, batch["labels"])
                    * x.shape[0])

        def compute_measurement(self, batch, model):
            return next_token_loglik(model(input_ids=batch["input_ids"]).logits,
                                     batch["labels"]).sum()

        def get_influence_tracked_modules(self):
            return tracked

    class Scores(Curvature):
        def compute_train_loss(self, batch, model, sample=False):
            return self.compute_measurement(batch, model)

    with tempfile.TemporaryDirectory() as tmp:
        def analyzer(task):
            return kf.Analyzer("gpt2", kf.prepare_model(copy.deepcopy(linear), task), task,
                               cpu=dev.type == "cpu", disable_tqdm=True, output_dir=tmp)

        fitter = analyzer(Curvature())
        _reset_peak(dev)
        rss0, t = _rss(), time.perf_counter()
        with _EighClock("kronfluence", log) as eig:
            fitter.fit_all_factors(
                "ekfac", _Windows(train_ids), per_device_batch_size=batch,
                factor_args=FactorArguments(strategy="ekfac", use_empirical_fisher=True))
            _phase(out, "kronfluence_fit", dev, t, rss0, log)
        out["kronfluence_eigh_s"], out["kronfluence_eigh_calls"] = eig.seconds, eig.calls
        out["kronfluence_eigh_largest"] = eig.largest
        del fitter
        scorer = analyzer(Scores())
        _reset_peak(dev)
        rss0, t = _rss(), time.perf_counter()
        scorer.compute_pairwise_scores("s", "ekfac", _Windows(test_ids), _Windows(train_ids),
                                       per_device_query_batch_size=batch,
                                       per_device_train_batch_size=batch,
                                       score_args=ScoreArguments(damping_factor=None))
        _phase(out, "kronfluence_score", dev, t, rss0, log)
        theirs = scorer.load_pairwise_scores("s")["all_modules"].double().cpu()
    ours = ours.double()
    out["max_rel_diff"] = float((ours - theirs).abs().max() / theirs.abs().max())
    out["pearson"] = float(torch.corrcoef(torch.stack([ours.flatten(), theirs.flatten()]))[0, 1])
    out["rss_peak_reset"] = _RESET_OK
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-train", type=int, default=8)
    p.add_argument("--n-test", type=int, default=4)
    p.add_argument("--seq", type=int, default=32)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads for both sides (default: torch's own)")
    p.add_argument("--json", default=None, help="also write the results here")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    load0 = os.getloadavg()
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} "
          f"CPUs, load average at start {' / '.join(f'{v:.2f}' for v in load0)}", flush=True)
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    lm = GPT2LMHeadModel(GPT2Config(attn_implementation="eager", attn_pdrop=0.0,
                                    resid_pdrop=0.0, embd_pdrop=0.0))
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, lm.config.vocab_size, (a.n_train + a.n_test, a.seq), generator=gen)
    res = ekfac_vs_kronfluence(lm, ids[:a.n_train], ids[a.n_train:], a.device, a.batch,
                               log=True)
    res["threads"], res["load_start"] = torch.get_num_threads(), load0
    res["load_end"] = os.getloadavg()
    for k, v in res.items():
        print(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
