"""Factorized (Kronecker) gradient features against dense ones at paper scale, on CPU or GPU.

One command, two tables (plus one with ``--gpt2-small``):

1. Per-sample featurization time and peak memory, factorized (``raytda.core.factorized``)
   against dense (``per_sample_grads`` by vmap, then ``GaussianProjector``), at the same
   total k, and against one plain forward + backward over the same samples, for
   ResNet-9 (full width, 4.83M parameters, 32x32 images), the Music Transformer (full
   size, 13.1M parameters, 256 events) and a 3.3M-parameter GPT-2 (Hugging Face, built from
   a config: 4 layers, d 192, vocabulary 8192; 512 sequences of 64 tokens). Inputs are
   synthetic, of the right shape (timing does not depend on the values).
2. How well inner products survive each projection, on CPU-scale models: the spread of
   <phi_i, phi_j> around <g_i, g_j> for the factorized features under each k split rule
   and for a dense Gaussian of the same total k.

Dense at full size does not fit this machine: P alone is n_params x k floats (40 GB for
ResNet-9 at k = 2048), so it is drawn again for every batch, as ``GaussianProjector`` does
when P is over its budget. Its row is measured on part of the work and extrapolated, and
says so: per-sample gradients are computed for ``--dense-samples`` samples (all of them,
timed), and the projection (drawing P and the product) is timed on the first
``--dense-rows`` rows of P and scaled by n_params / rows. Its peak memory is that of the
measured part.

Every row runs in its own subprocess, so its peak memory is the growth of ru_maxrss from
after the model, inputs and a small warm-up pass exist to the end of its first timed pass
(on a GPU, ``--device cuda``: the growth of the CUDA allocator's peak over what was
allocated at that point; host memory is not counted there).
The machine is shared, so times move with the background load: each row also times plain
forward + backward passes over the same samples in the same process, interleaved with its
own passes (``--repeats`` rounds, best of each kept), and reports its time as a multiple
of that ("x fwd+bwd"). "dense / this" divides dense's multiple by the row's, which cancels
a load that differs between the rows' processes.

Usage::

    python benchmarks/bench_scale.py                  # tables 1 and 2 (~15 min on 2 cores)
    python benchmarks/bench_scale.py --only gpt2-3m   # one model of table 1
    python benchmarks/bench_scale.py --gpt2-small     # adds the 124M GPT-2 rows
    python benchmarks/bench_scale.py --device cuda --gpt2-small --no-variance  # GPU rows
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import log, table

REPO = Path(__file__).resolve().parents[1]
K = 2048


# --------------------------------------------------------------------------- models


def build(name: str):
    """(Network, x, y, output) of a table-1 model with synthetic inputs."""
    from raytda.core.network import Network
    from raytda.core.outputs import CLASSIFICATION, GENERATIVE

    gen = torch.Generator().manual_seed(0)
    if name == "resnet9":
        from raytda.models.resnet9 import ResNet9

        torch.manual_seed(0)
        net = Network(ResNet9(num_classes=2, dropout=0.1, width=1.0), torch.zeros(1, 3, 32, 32))
        return net, lambda n: (torch.randn(n, 3, 32, 32, generator=gen),
                               torch.randint(0, 2, (n,), generator=gen)), CLASSIFICATION
    if name == "mt":
        from raytda.models.music_transformer import MusicTransformer

        torch.manual_seed(0)
        net = Network(MusicTransformer(), torch.zeros(1, 256, dtype=torch.long), mask_dims=1)
        return net, lambda n: _tokens(gen, n, 256, 388), GENERATIVE
    if name in ("gpt2-3m", "gpt2-small"):
        import transformers

        torch.manual_seed(0)
        if name == "gpt2-3m":
            cfg = transformers.GPT2Config(vocab_size=8192, n_layer=4, n_embd=192, n_head=4,
                                          n_positions=64, bos_token_id=0, eos_token_id=0,
                                          attn_implementation="eager")
            t = 64
        else:  # GPT-2 small's shape: 12 layers, d 768, 12 heads, 50257 tokens (124M)
            cfg = transformers.GPT2Config(attn_implementation="eager")
            t = 128
        lm = transformers.GPT2LMHeadModel(cfg)
        net = Network(lm, torch.zeros(1, t, dtype=torch.long), forward=_logits, mask_dims=1)
        return net, lambda n: _tokens(gen, n, t, cfg.vocab_size), GENERATIVE
    raise ValueError(name)


def _logits(module, x):
    return module(x).logits


def _tokens(gen, n, t, vocab):
    seq = torch.randint(0, vocab, (n, t + 1), generator=gen)
    return seq[:, :-1].contiguous(), seq[:, 1:].contiguous()


# Per model: samples timed, featurization batch, dense samples, dense P rows timed.
PLAN = {
    "resnet9": dict(n=64, batch=32, dense_samples=32, dense_rows=1 << 17),
    "mt": dict(n=16, batch=8, dense_samples=8, dense_rows=1 << 17),
    "gpt2-3m": dict(n=512, batch=64, dense_samples=32, dense_rows=1 << 17),
    "gpt2-small": dict(n=256, batch=16, dense_samples=4, dense_rows=1 << 16, queries=16),
}


# --------------------------------------------------------------------------- one row


def _maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Meter:
    """Clock and peak memory of one row on its device.

    CUDA work is asynchronous, so every reading synchronizes first; on a GPU the peak is
    the allocator's (device memory), on the CPU the process's resident set.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.base = 0

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def start_peak(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = _maxrss()

    def peak_mb(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            return (torch.cuda.max_memory_allocated() - self.base) / 2**20
        return (_maxrss() - self.base) / 2**20


def run_row(model_name: str, method: str, dense_samples: int | None,
            dense_rows: int | None, repeats: int = 1, samples: int | None = None,
            device: str = "cpu", batch: int | None = None) -> dict:
    """Time one (model, method) in this process on ``device``; returns a row of table 1."""
    from raytda.core.factorized import FactorizedProjector
    from raytda.core.grads import n_trainable, per_sample_grads
    from raytda.core.projection import GaussianProjector

    plan = dict(PLAN[model_name])
    if dense_samples:
        plan["dense_samples"] = dense_samples
    if dense_rows:
        plan["dense_rows"] = dense_rows
    if samples:
        plan["n"] = samples
    if batch:
        plan["batch"] = batch
    dev = torch.device(device)
    meter = Meter(dev)
    net, data, output = build(model_name)
    net.to(dev).eval()
    n, bs = plan["n"], plan["batch"]
    x, y = (t.to(dev) for t in data(n + plan.get("queries", 0)))
    n_par = n_trainable(net)
    row = {"model": model_name, "params": n_par, "method": method, "samples": x.shape[0]}

    def plain(m: int) -> float:
        """Seconds of one plain forward + backward (weight gradients) over x[:m]."""
        t0 = meter.now()
        for b0 in range(0, m, bs):
            net.zero_grad(set_to_none=True)
            b1 = min(b0 + bs, m)
            output.f(net(x[b0:b1]), y[b0:b1]).sum().backward()
        return meter.now() - t0

    if method == "fwd+bwd":
        plain(min(bs, x.shape[0]))  # warm-up (on a GPU: kernels chosen, caches filled)
        meter.start_peak()
        seconds = plain(x.shape[0])
        row["peak_mb"] = meter.peak_mb()
        for _ in range(repeats - 1):
            seconds = min(seconds, plain(x.shape[0]))
        row.update(s_per_sample=seconds / x.shape[0], extrapolated=False, x_plain=1.0)
        return row
    if method.startswith(("factorized", "sketch")):
        uncovered = "skip" if method.endswith("skip") else "dense"
        if method.startswith("sketch"):
            from raytda.core.tensor_sketch import SketchProjector

            proj = SketchProjector(net, K, seed=0, device=dev, uncovered=uncovered)
            hows = [lay["sketch"] for lay in proj.describe()["layers"]]
            blocks = (f"{hows.count('tensor')} TensorSketch + {hows.count('countsketch')} "
                      f"CountSketch blocks")
        else:
            proj = FactorizedProjector(net, K, seed=0, device=dev, uncovered=uncovered)
            blocks = f"{len(proj.layers)} Kronecker blocks"
        desc = proj.describe()
        row["dim"] = proj.dim
        row["note"] = (f"{blocks}; uncovered {desc['n_params_uncovered']:,} params in "
                       f"{len(desc['uncovered'])} modules ({uncovered})")

        def work() -> float:
            t0 = meter.now()
            for _ in proj.per_sample_features(x, y, None, "train", bs, output):
                pass
            return meter.now() - t0

        proj.features(x[:2], y[:2], None, output)  # warm-up
        meter.start_peak()
        seconds = work()
        row["peak_mb"] = meter.peak_mb()  # before any plain pass
        # Interleaved with plain passes over the same samples in this process, so the
        # multiple sees the same background load; best of each (load only adds time).
        plain_s = math.inf
        for r in range(repeats):
            plain_s = min(plain_s, plain(x.shape[0]))
            if r:
                seconds = min(seconds, work())
        row.update(s_per_sample=seconds / x.shape[0], extrapolated=False,
                   x_plain=seconds / plain_s)
        return row
    if method != "dense":
        raise ValueError(method)
    b, rows = min(plan["dense_samples"], x.shape[0]), min(plan["dense_rows"], n_par)
    row["samples"] = b
    row["dim"] = K
    next(per_sample_grads(net, x[:1], y[:1], batch_size=1, device=device,
                          output=output))  # warm-up
    meter.start_peak()
    t0 = meter.now()
    grads = next(per_sample_grads(net, x[:b], y[:b], batch_size=b, device=device,
                                  output=output))[1]
    t_grads = meter.now() - t0
    # At full size P is over any memory budget and is drawn again for every batch
    # (GaussianProjector streaming): time the draw and the product of a slice apart, so
    # the table can also give dense's lower bound with P free.
    part = GaussianProjector(rows, K, seed=0, memory_bytes=rows * K * 4,
                             device=dev)  # resident slice
    t0 = meter.now()
    part.materialize()
    t_draw = meter.now() - t0
    part.project(grads[:2, :rows])  # warm-up of the product
    t0 = meter.now()
    part.project(grads[:, :rows])
    t_gemm = meter.now() - t0
    row["peak_mb"] = meter.peak_mb()
    del grads, part
    plain_s = min(plain(b) for _ in range(max(1, repeats)))
    scale = n_par / rows
    row["s_per_sample"] = (t_grads + (t_draw + t_gemm) * scale) / b
    row["s_per_sample_p_free"] = (t_grads + t_gemm * scale) / b
    row["x_plain"] = row["s_per_sample"] * b / plain_s
    row["x_plain_p_free"] = row["s_per_sample_p_free"] * b / plain_s
    row["extrapolated"] = rows < n_par
    row["note"] = (f"per sample: grads {t_grads / b:.3f} s (vmap, {b} measured), draw P "
                   f"{t_draw * scale / b:.3f} s, product {t_gemm * scale / b:.3f} s" + (
                       f" (P: {rows:,} of {n_par:,} rows timed, x {scale:.1f})"
                       if rows < n_par else ""))
    return row


def row_in_subprocess(model: str, method: str, a: argparse.Namespace) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, __file__, "--row", f"{model}:{method}", "--row-out", out.name,
               "--threads", str(a.threads), "--repeats", str(a.repeats), "--device", a.device]
        if a.batch:
            cmd += ["--batch", str(a.batch)]
        if a.dense_samples:
            cmd += ["--dense-samples", str(a.dense_samples)]
        if a.dense_rows:
            cmd += ["--dense-rows", str(a.dense_rows)]
        if a.samples:
            cmd += ["--samples", str(a.samples)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(REPO), os.environ.get("PYTHONPATH", "")])}
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"row {model}:{method} failed:\n{done.stderr[-3000:]}")
        return json.loads(Path(out.name).read_text())


# --------------------------------------------------------------------------- variance


def variance_table(seeds: int, k: int) -> list[list[object]]:
    """Spread of projected inner products around the true ones, CPU-scale models.

    For n samples with per-sample gradients g_i, each projection seed s gives estimates
    e_ij(s) = <phi_i, phi_j>. The number reported is the mean over pairs (i <= j) of
    E_s[(e_ij - <g_i, g_j>)^2] / (|g_i|^2 |g_j|^2): a dense Gaussian's theory value is
    (1 + cos^2_ij) / k, so dense rows read about 1/k to 2/k. "/ dense" divides a row's
    spread by the dense Gaussian's on the same model.

    The dense Gaussian of a model with more than ``GRAM_MIN`` parameters (GPT-2 3.3M: its
    P would be 27 GB, drawn again per seed) projects the gradients' coordinates in an
    orthonormal basis of their span instead: a Gaussian matrix's law is invariant under
    rotations, so the estimates have exactly the same distribution.
    """
    from raytda.core.factorized import FactorizedProjector
    from raytda.core.grads import per_sample_grads
    from raytda.core.network import Network
    from raytda.core.outputs import CLASSIFICATION, GENERATIVE
    from raytda.core.projection import GaussianProjector
    from raytda.core.tensor_sketch import SketchProjector
    from raytda.models.music_transformer import MusicTransformer
    from raytda.models.resnet9 import ResNet9

    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    small = {
        "resnet9 w=1/8": lambda: (
            Network(ResNet9(2, 0.1, 0.125), torch.zeros(1, 3, 32, 32)).eval(),
            torch.randn(8, 3, 32, 32, generator=gen),
            torch.randint(0, 2, (8,), generator=gen), CLASSIFICATION),
        "mt cpu-scale": lambda: (
            Network(MusicTransformer(2, 4, 64, 128, 388, 64, 0.1),
                    torch.zeros(1, 64, dtype=torch.long), mask_dims=1).eval(),
            *_tokens(gen, 8, 64, 388), GENERATIVE),
        "gpt2-3m": lambda: (build("gpt2-3m")[0].eval(), *_tokens(gen, 8, 64, 8192), GENERATIVE),
    }
    rows = []
    for name, make in small.items():
        if VARIANCE_MODELS and name not in VARIANCE_MODELS:
            continue
        net, x, y, out = make()
        g = next(per_sample_grads(net, x, y, batch_size=x.shape[0], output=out))[1].double()
        true = g @ g.T
        norms = g.norm(dim=1)
        iu = torch.triu_indices(x.shape[0], x.shape[0])
        denom = (norms[:, None] * norms[None, :])[iu[0], iu[1]] ** 2

        def spread(estimates: list[torch.Tensor], true=true, iu=iu, denom=denom) -> float:
            err = torch.stack([(e - true)[iu[0], iu[1]] ** 2 for e in estimates]).mean(0)
            return float((err / denom).mean())

        gram = g.shape[1] > GRAM_MIN
        coords = torch.linalg.qr(g.T)[1].T.float() if gram else g.float()  # (n, n) or (n, p)
        variants: list[tuple[str, int, object]] = [("dense Gaussian" + (
            " (Gram-equivalent)" if gram else ""), k, None)]
        for kk in (k, 4 * k):
            for rule in VARIANCE_RULES:
                variants.append((f"factorized, k split {rule}", kk, rule))
        variants += [("sketch", k, "sketch"), ("sketch, TensorSketch only", k, "tensor")]
        dense_v = math.nan
        for label, kk, rule in variants:
            t0 = time.perf_counter()
            est, dim = [], kk
            for s in range(seeds):
                if rule is None:
                    phi = GaussianProjector(coords.shape[1], kk, seed=s).project(coords).double()
                elif rule in ("sketch", "tensor"):
                    proj = SketchProjector(net, kk, seed=s,
                                           **({"explicit_factor": 0} if rule == "tensor" else {}))
                    phi = proj.features(x, y, None, out).double()
                else:
                    proj = FactorizedProjector(net, kk, seed=s, rule=rule)
                    dim = proj.dim
                    phi = proj.features(x, y, None, out).double()
                est.append(phi @ phi.T)
            v = spread(est)
            if rule is None:
                dense_v = v
            rows.append([name, f"{g.shape[1]:,}", label, dim, f"{v:.2e}", f"{v * dim:.1f}",
                         f"{v / dense_v:.2f}", f"{time.perf_counter() - t0:.1f}"])
            log(f"variance {name} {label} k={kk}: {v:.2e} ({v / dense_v:.2f}x dense)")
    return rows


#: above this many parameters table 2's dense Gaussian uses the Gram-equivalent form
GRAM_MIN = 200_000
#: table-2 models to run (empty: all)
VARIANCE_MODELS: list[str] = []
#: table-2 k split rules of the factorized rows
VARIANCE_RULES: list[str] = ["equal", "sqrt", "params"]


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="resnet9,mt,gpt2-3m", help="table-1 models, comma-separated")
    p.add_argument("--gpt2-small", action="store_true", help="add the 124M GPT-2 rows (slow)")
    p.add_argument("--no-variance", action="store_true", help="skip table 2")
    p.add_argument("--repeats", type=int, default=2,
                   help="rounds of (plain pass, featurization) per row; best of each is kept")
    p.add_argument("--variance-seeds", type=int, default=20)
    p.add_argument("--variance-models", default="",
                   help="table-2 models, comma-separated (default: all)")
    p.add_argument("--gram-min", type=int, default=200_000,
                   help="table 2's dense Gaussian is Gram-equivalent above this many params")
    p.add_argument("--variance-rules", default="equal,sqrt,params",
                   help="table-2 k split rules of the factorized rows, comma-separated")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--dense-samples", type=int, default=0, help="override the plan's")
    p.add_argument("--dense-rows", type=int, default=0, help="override the plan's")
    p.add_argument("--samples", type=int, default=0,
                   help="override the plan's number of (train) samples, for a shorter run")
    p.add_argument("--methods", default="", help="subset of fwd+bwd,factorized,"
                   "factorized-skip,sketch,sketch-skip,dense (default: all that apply)")
    p.add_argument("--device", default="cpu", help="where table 1 runs: cpu or cuda[:i]")
    p.add_argument("--batch", type=int, default=0,
                   help="override the plan's featurization batch (every row of a model)")
    p.add_argument("--row", help=argparse.SUPPRESS)
    p.add_argument("--row-out", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    VARIANCE_MODELS[:] = [m for m in a.variance_models.split(",") if m]
    VARIANCE_RULES[:] = [r for r in a.variance_rules.split(",") if r]
    global GRAM_MIN
    GRAM_MIN = a.gram_min
    if a.row:
        model, method = a.row.split(":")
        result = run_row(model, method, a.dense_samples or None, a.dense_rows or None,
                         a.repeats, a.samples or None, a.device, a.batch or None)
        Path(a.row_out).write_text(json.dumps(result))
        return 0

    models = [m for m in a.only.split(",") if m] + (["gpt2-small"] if a.gpt2_small else [])
    where = (f"{torch.cuda.get_device_name(a.device)} ({a.device}), "
             if a.device.startswith("cuda") else "")
    print(f"# bench_scale: {where}{platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}, {a.threads} threads, k = {K}, "
          f"load average at start {os.getloadavg()[0]:.2f}\n")
    rows, failed = [], []
    for model in models:
        methods = ["fwd+bwd", "factorized", "factorized-skip", "sketch", "sketch-skip", "dense"]
        if model in ("resnet9", "gpt2-small"):  # uncovered: norms only, read off the hooks
            methods.remove("factorized-skip")
            methods.remove("sketch-skip")
        if a.methods:
            methods = [m for m in methods if m in a.methods.split(",")]
        got = {}
        for method in methods:
            log(f"{model}: {method}")
            try:
                got[method] = r = row_in_subprocess(model, method, a)
            except RuntimeError as e:  # one row's failure (memory, a missing op) is a row
                log(str(e))
                failed.append([model, method, str(e).strip().splitlines()[-1][:200]])
                continue
            log(f"  {r['s_per_sample']:.3g} s/sample, peak +{r['peak_mb']:.0f} MB")
        dense = got.get("dense", {"x_plain": math.nan, "x_plain_p_free": math.nan,
                                  "s_per_sample_p_free": math.nan})
        if "dense" in got:
            got["dense, P free"] = {**dense, "s_per_sample": dense["s_per_sample_p_free"],
                                    "x_plain": dense["x_plain_p_free"],
                                    "note": "lower bound: as dense, without drawing P"}
        for method, r in got.items():
            rows.append([model, f"{r['params'] / 1e6:.2f}M", method, r.get("dim", ""),
                         r["samples"], f"{r['s_per_sample']:.3g}",
                         "extrapolated" if r["extrapolated"] else "measured",
                         f"{r['x_plain']:.2f}", f"{dense['x_plain'] / r['x_plain']:.1f}",
                         f"{r['peak_mb']:.0f}", r.get("note", "")])
    print(table(["model", "params", "method", "dim", "samples", "s/sample", "time is",
                 "x fwd+bwd", "dense / this", "peak MB", "note"], rows))
    if failed:
        print("\nRows that failed (no number is given for them):\n")
        print(table(["model", "method", "error"], failed))
    print(f"\nload average at end {os.getloadavg()[0]:.2f}")
    if not a.no_variance:
        print("\nInner-product spread, mean over pairs of E[(est - true)^2] / (|g_i|^2 |g_j|^2), "
              f"{a.variance_seeds} seeds, 8 samples (dense theory: (1 + cos^2) / k)\n")
        print(table(["model", "params", "projection", "dim", "spread", "spread x dim",
                     "/ dense", "s"],
                    variance_table(a.variance_seeds, K)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
