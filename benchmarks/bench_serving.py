"""TRAK serving benchmark: raytda against dattri 0.3.0 on the same MNIST-MLP checkpoint.

    python benchmarks/bench_serving.py --data-dir /work/shared/data/mnist
    python benchmarks/bench_serving.py --data-dir ... --sweep                       # + sweep
    python benchmarks/bench_serving.py --data-dir ... --sweep --with-dattri-sweep   # + dattri loop

Serving = everything after training: per-sample gradients of the margin on train and test,
their k=2048 Gaussian projection (including generating the projection matrix), the kernel
solve, Q = 1 - p on the train set, and the scores (I = 1). Both sides use the same trained
checkpoint, the same 5000 train / 500 test samples, the same model output (the margin, for
train and test gradients), Q = 1 - p_y, k = 2048 Gaussian projections, no ridge, CPU.
They differ only in projection seeds (so scores agree closely but not exactly; the
agreement is printed) and in raytda solving in float64.

The checkpoint is trained for ``--epochs`` (default 10, not the recipe's 100): only serving
is timed and its cost does not depend on how long the model was trained.

The fp32 matmul rate of this machine is measured in the same run (a square 4096 SGEMM and a
GEMM of the projection's own shape), so the projection's achieved GFLOP/s can be read
against it even when other work shares the CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # dattri's progress bars would swamp the tables

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from raytda.core import gemm  # noqa: E402
from raytda.core.args import ComputeArgs  # noqa: E402
from raytda.core.grads import forward_outputs, n_params, per_sample_grads  # noqa: E402
from raytda.core.masks import MaskSpec  # noqa: E402
from raytda.core.outputs import margin  # noqa: E402
from raytda.core.projection import GaussianProjector  # noqa: E402
from raytda.core.sparse_input import SparseInputProjection  # noqa: E402
from raytda.core.train import half_subset, load_weights, train_model  # noqa: E402
from raytda.core.trak import kernel_solve, trak_block, trak_scores  # noqa: E402
from raytda.data import DataError, Dataset, load_data  # noqa: E402
from raytda.models import build_model  # noqa: E402
from raytda.settings import get_setting  # noqa: E402
from raytda.specs import ModelSpec, Setting, derive_seed  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "mnist"


# --------------------------------------------------------------------------- helpers


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-markdown table (readable in a terminal too)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), sep, *(line(r) for r in cells[1:])])


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def best_of(fn: Callable[[], object], repeats: int) -> float:
    return min(timed(fn)[1] for _ in range(repeats))


def matmul_gflops(m: int, k: int, n: int, repeats: int = 3) -> dict[str, float]:
    """Best fp32 GEMM rate (GFLOP/s) for (m x k) @ (k x n) on this machine, right now,
    through each BLAS in the process (torch's MKL; numpy's OpenBLAS when present)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=gen)
    b = torch.randn(k, n, generator=gen)
    out = torch.empty(m, n)
    torch.mm(a, b, out=out)  # warm-up: pages faulted in, BLAS initialized
    rates = {"torch": 2.0 * m * k * n / best_of(lambda: torch.mm(a, b, out=out), repeats) / 1e9}
    try:
        gemm.resolve("numpy")
    except ValueError:
        return rates
    an, bn, on = a.numpy(), b.numpy(), out.numpy()
    np.matmul(an, bn, out=on)
    rates["numpy"] = 2.0 * m * k * n / best_of(lambda: np.matmul(an, bn, out=on), repeats) / 1e9
    return rates


def fmt_rates(runs: list[dict[str, float]]) -> str:
    """'torch 158 / 160, numpy 201 / 199' for start/end measurements."""
    return ", ".join(f"{name} " + " / ".join(f"{r[name]:.0f}" for r in runs)
                     for name in runs[0])


def mean_row_corr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over rows (test samples) of the Pearson correlation of two score matrices."""
    a = a.double() - a.double().mean(1, keepdim=True)
    b = b.double() - b.double().mean(1, keepdim=True)
    r = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-300)
    return float(r.mean())


# --------------------------------------------------------------------------- setup


def load_setting(args: argparse.Namespace) -> tuple[Setting, Dataset] | None:
    """The MNIST-MLP setting and its data, or None (with a message) if the data is missing."""
    data_dir = Path(args.data_dir)
    if not data_dir.is_dir():
        print(f"SKIP: MNIST directory {data_dir} not found; pass --data-dir pointing at the "
              f"IDX files (train-images-idx3-ubyte[.gz], ...).")
        return None
    setting = get_setting("mnist-mlp", data_dir=str(data_dir), n_train=args.n_train,
                          n_test=args.n_test, epochs=args.epochs)
    try:
        data = load_data(setting.data)
    except (DataError, FileNotFoundError) as e:
        print(f"SKIP: could not load MNIST from {data_dir}: {e}")
        return None
    return setting, data


# --------------------------------------------------------------------------- raytda side


def serve_raytda(model: nn.Module, data: Dataset, k: int, seed: int, compute: ComputeArgs,
                 dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, float]:
    """(scores m x n, seconds): one member's TRAK serving through the public core path."""
    t0 = time.perf_counter()
    proj = GaussianProjector(n_params(model), k, seed, compute.proj_memory_bytes,
                             compute.device, dtype, cpu_gemm=compute.cpu_gemm)
    block, _ = trak_block(model, data, proj, None, None, compute)
    _, q = forward_outputs(model, data.x_train, data.y_train, None, "train",
                           compute.forward_batch, compute.device)
    scores = trak_scores([q], [block])
    return scores, time.perf_counter() - t0


class MatrixProjector:
    """A projector with a given matrix (duck-types GaussianProjector for ``trak_block``)."""

    def __init__(self, matrix: torch.Tensor) -> None:
        self.matrix, self.k = matrix, matrix.shape[1]

    def project(self, grads: torch.Tensor) -> torch.Tensor:
        return grads @ self.matrix


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


@dataclass
class Breakdown:
    generate_s: float = 0.0
    grads_s: float = 0.0
    project_s: float = 0.0
    solve_s: float = 0.0
    q_s: float = 0.0
    samples: int = 0
    flops: float = 0.0  # 2 x multiply-adds the projection actually did
    extra: dict = field(default_factory=dict)

    @property
    def total_s(self) -> float:
        return self.generate_s + self.grads_s + self.project_s + self.solve_s + self.q_s


def raytda_breakdown(model: nn.Module, data: Dataset, k: int, seed: int,
                     compute: ComputeArgs) -> Breakdown:
    """The steps of ``serve_raytda`` (same functions, same order), each timed on its own."""
    br = Breakdown()
    proj = GaussianProjector(n_params(model), k, seed, compute.proj_memory_bytes,
                             compute.device, cpu_gemm=compute.cpu_gemm)
    sparse = None
    if compute.sparse_inputs:  # as trak_block decides; building it generates the grouped P
        sparse, br.generate_s = timed(lambda: SparseInputProjection.build(
            model, proj, data.x_train, compute.grad_batch))
    if sparse is None:
        _, t = timed(proj.materialize)
        br.generate_s += t
    feats = []
    for x, y, split in ((data.x_train, data.y_train, "train"),
                        (data.x_test, data.y_test, "test")):
        out = torch.empty(x.shape[0], k)
        it = (sparse.batches(model, x, y, None, split, compute.grad_batch, compute.device)
              if sparse is not None else
              per_sample_grads(model, x, y, None, split, compute.grad_batch, compute.device))
        while True:
            t0 = time.perf_counter()
            item = next(it, None)
            br.grads_s += time.perf_counter() - t0
            if item is None:
                break
            rows, g = item
            t0 = time.perf_counter()
            out[rows] = (sparse or proj).project(g)
            br.project_s += time.perf_counter() - t0
            del g
        feats.append(out)
        br.samples += x.shape[0]
    br.flops = sparse.flops if sparse is not None else 2.0 * br.samples * proj.n_params * k
    _, br.solve_s = timed(lambda: kernel_solve(feats[0], feats[1]))
    _, br.q_s = timed(lambda: forward_outputs(model, data.x_train, data.y_train, None, "train",
                                              compute.forward_batch, compute.device))
    return br


# --------------------------------------------------------------------------- dattri side


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

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.net = build_model(spec)
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


# --------------------------------------------------------------------------- serving


def run_serving(args: argparse.Namespace, setting: Setting, data: Dataset) -> dict:
    torch.manual_seed(0)
    log(f"training one checkpoint ({args.epochs} epochs, {data.n_train} samples)")
    trained = train_model(setting.model, setting.recipe, data.x_train, data.y_train, seed=0)
    state = trained.final
    model = load_weights(setting.model, state)
    p, k = n_params(model), args.proj_dim
    compute = ComputeArgs(grad_batch=args.grad_batch, cpu_gemm=args.cpu_gemm,
                          sparse_inputs=args.sparse_inputs)
    gemm_used = gemm.resolve(compute.cpu_gemm)
    log(f"CPU GEMM backend for the projection: {compute.cpu_gemm} -> {gemm_used}")
    n_all = data.n_train + data.n_test
    flops = 2.0 * n_all * p * k

    log("measuring this machine's fp32 matmul rate")
    rate_sq = [matmul_gflops(4096, 4096, 4096)]
    rate_shape = [matmul_gflops(args.grad_batch, p, k)]

    runs_r: list[float] = []
    scores_by_seed: dict[int, torch.Tensor] = {}

    def raytda_once() -> torch.Tensor:
        # Alternate two projection seeds: the agreement between them is the projection
        # noise floor that raytda-vs-dattri agreement should be read against.
        seed = 1 + len(runs_r) % 2
        s, t = serve_raytda(model, data, k, seed=seed, compute=compute)
        runs_r.append(t)
        scores_by_seed[seed] = s
        log(f"raytda serving {t:.2f} s")
        return s

    dattri: dict[int, list[float]] = {}
    agree: dict[int, float] = {}
    last_dattri = None
    bf16: list[float] = []
    bf16_agree = float("nan")
    raytda_once()  # also warms up (first-touch of the allocator, BLAS threads)
    br = raytda_breakdown(model, data, k, seed=1, compute=compute)
    log(f"raytda breakdown: {br}")
    use_dattri = not args.skip_dattri and dattri_available()
    if not args.skip_dattri and not use_dattri:
        print("NOTE: dattri is not installed (pip install dattri==0.3.0); its rows are skipped.")
    for _ in range(args.repeats):
        for b in (args.dattri_batches if use_dattri else []):
            # Interleave: raytda once per dattri run, so both see the same background load.
            ours = raytda_once()
            last_dattri, t = serve_dattri(build_model(setting.model), [state], data, k, b)
            dattri.setdefault(b, []).append(t)
            agree[b] = mean_row_corr(ours, last_dattri)
            log(f"dattri batch {b}: {t:.2f} s (score agreement r={agree[b]:.3f})")
        if args.bf16:
            s16, t16 = serve_raytda(model, data, k, seed=1, compute=compute,
                                    dtype=torch.bfloat16)
            bf16.append(t16)
            bf16_agree = mean_row_corr(s16, scores_by_seed[1])
            log(f"raytda bf16 serving {t16:.2f} s (r vs fp32 same seed {bf16_agree:.4f})")
    raytda_once()
    raytda_once()
    # References: what each of the two CPU-specific speed-ups is worth on its own.
    variants = {"raytda (fp32, dense projection)": replace(compute, sparse_inputs=False),
                "raytda (fp32, dense projection, torch GEMM)":
                    replace(compute, sparse_inputs=False, cpu_gemm="torch")}
    ref_runs: dict[str, list[float]] = {}
    for name, variant in variants.items():
        for _ in range(2):
            ref_runs.setdefault(name, []).append(
                serve_raytda(model, data, k, seed=1, compute=variant)[1])
            log(f"{name}: {ref_runs[name][-1]:.2f} s")
    # A second instrumented run once the dattri runs are done; keep the quieter one.
    br2 = raytda_breakdown(model, data, k, seed=1, compute=compute)
    log(f"raytda breakdown: {br2}")
    br = min(br, br2, key=lambda b: b.total_s)
    rate_sq.append(matmul_gflops(4096, 4096, 4096))
    rate_shape.append(matmul_gflops(args.grad_batch, p, k))

    same = None
    if last_dattri is not None:
        # Same projection on both sides: the scores must then agree up to float error.
        log("checking raytda against dattri with dattri's own projection matrix")
        proj = MatrixProjector(dattri_cpu_matrix(p, k))
        block, _ = trak_block(model, data, proj, None, None, compute)  # type: ignore[arg-type]
        _, q = forward_outputs(model, data.x_train, data.y_train)
        same = trak_scores([q], [block])
        del proj, block

    machine = max(max(r.values()) for r in rate_sq + rate_shape)
    r_best = min(runs_r)
    out = {"raytda_s": r_best, "raytda_runs": runs_r, "dattri": dattri, "agree": agree,
           "breakdown": br, "machine_gflops": machine, "p": p}

    print(f"\n## TRAK serving, MNIST-MLP ({p:,} params), k={k}, "
          f"{data.n_train} train + {data.n_test} test, I=1, CPU, "
          f"{torch.get_num_threads()} torch threads\n")
    noise = mean_row_corr(scores_by_seed[1], scores_by_seed[2]) if len(scores_by_seed) > 1 \
        else float("nan")
    path = "zero inputs skipped" if compute.sparse_inputs else "dense projection"
    rows = [[f"raytda (fp32, {path}, {gemm_used} GEMM)", f"{compute.grad_batch}", f"{r_best:.2f}",
             f"{statistics.median(runs_r):.2f}", f"{n_all / r_best:.0f}", "1.00",
             f"{noise:.3f} (other seed)"]]
    for name, ts in ref_runs.items():
        rows.append([name, f"{compute.grad_batch}", f"{min(ts):.2f}",
                     f"{statistics.median(ts):.2f}", f"{n_all / min(ts):.0f}",
                     f"{min(ts) / r_best:.2f}", ""])
    if bf16:
        rows.append(["raytda, bf16 projection (option)", f"{compute.grad_batch}",
                     f"{min(bf16):.2f}", f"{statistics.median(bf16):.2f}",
                     f"{n_all / min(bf16):.0f}", f"{min(bf16) / r_best:.2f}",
                     f"{bf16_agree:.4f} (same seed)"])
    best_d = None
    for b, ts in dattri.items():
        tb = min(ts)
        best_d = tb if best_d is None else min(best_d, tb)
        rows.append(["dattri 0.3.0 TRAKAttributor", f"{b}", f"{tb:.2f}",
                     f"{statistics.median(ts):.2f}", f"{n_all / tb:.0f}",
                     f"{tb / r_best:.2f}", f"{agree[b]:.3f}"])
    print(table(["implementation", "batch", "best s", "median s", "samples/s",
                 "time / raytda", "score r vs raytda"], rows))
    if best_d is not None:
        print(f"\nraytda (fp32) vs dattri at its best batch: {best_d / r_best:.2f}x faster "
              f"(best of runs on each side; raytda runs "
              f"{', '.join(f'{t:.1f}' for t in runs_r)} s)")
        out["speedup"] = best_d / r_best
    print("\nscore r: mean over test samples of the Pearson correlation of the score rows. "
          "Different projection seeds alone give the 'other seed' value.")
    if same is not None:
        r_same = mean_row_corr(same, last_dattri)
        rel = float((same - last_dattri).norm() / last_dattri.norm())
        print(f"Same math check: raytda's pipeline run with dattri's projection matrix vs "
              f"dattri's scores: r = {r_same:.5f}, relative L2 difference {rel:.1e} "
              f"(dattri solves in float32, raytda in float64).")

    print("\n## Where raytda's serving time goes (instrumented run, quieter of two)\n")
    rows = [
        ["projection matrix (generate, resident)", f"{br.generate_s:.2f}", ""],
        ["per-sample gradients", f"{br.grads_s:.2f}", f"{br.samples / br.grads_s:.0f} samples/s"],
        ["projection matmul G @ P", f"{br.project_s:.2f}",
         f"{br.flops / br.project_s / 1e9:.0f} GFLOP/s done, "
         f"{br.flops / flops:.0%} of the dense product's"],
        ["kernel solve (float64)", f"{br.solve_s:.2f}", ""],
        ["Q = 1 - p (forward)", f"{br.q_s:.2f}", ""],
        ["sum", f"{br.total_s:.2f}", f"{br.samples / br.total_s:.0f} samples/s"],
    ]
    print(table(["step", "seconds", "rate"], rows))

    # Rates count the multiply-adds actually done (fewer than 2*n*p*k when zero inputs
    # are skipped), so they measure how well the GEMMs run, not the skipping.
    achieved = br.flops / br.project_s / 1e9
    achieved_gen = br.flops / (br.project_s + br.generate_s) / 1e9
    print("\n## Projection GFLOP/s vs this machine's fp32 matmul (same run)\n")
    rows = [
        ["machine: square 4096 SGEMM (start / end)", fmt_rates(rate_sq), ""],
        [f"machine: GEMM of the projection's shape ({compute.grad_batch} x {p}) @ ({p} x {k})",
         fmt_rates(rate_shape), ""],
        ["raytda projection, matmul only (FLOPs done / time)", f"{achieved:.0f}",
         f"{100 * achieved / machine:.0f}%"],
        ["raytda projection incl. generating P", f"{achieved_gen:.0f}",
         f"{100 * achieved_gen / machine:.0f}%"],
    ]
    print(table(["what", "GFLOP/s", "of machine best"], rows))
    out["projection_fraction"] = achieved / machine
    return out


# --------------------------------------------------------------------------- sweep


@dataclass(frozen=True)
class Config:
    kind: str  # "naive" or "dropout"
    I: int
    D: int = 1

    @property
    def label(self) -> str:
        return f"{self.kind} I={self.I}" + (f" D={self.D}" if self.kind == "dropout" else "")

    def members(self) -> list[tuple[int, int | None]]:
        """(model index, mask index or None) of every member."""
        if self.kind == "naive":
            return [(i, None) for i in range(self.I)]
        return [(i, d) for i in range(self.I) for d in range(self.D)]


def table1_configs(max_i: int, d: int) -> list[Config]:
    return ([Config("naive", i) for i in range(1, max_i + 1)]
            + [Config("dropout", i, d) for i in range(1, max_i + 1)])


def member_mask(setting: Setting, i: int, d: int | None) -> MaskSpec | None:
    if d is None:
        return None
    return MaskSpec(seed=derive_seed("bench-mask", i, d), rate=setting.model.dropout)


def member_proj_seed(i: int, d: int | None) -> int:
    return derive_seed("bench-proj", i, -1 if d is None else d)


def train_member_model(setting: Setting, data: Dataset, i: int) -> tuple[dict, float]:
    """Model i of the ensemble: TRAK's recipe, a random half of the train set, seed i."""
    sub = torch.from_numpy(half_subset(data.n_train, derive_seed("bench-subset", i)))
    trained = train_model(setting.model, setting.recipe, data.x_train[sub], data.y_train[sub],
                          seed=derive_seed("bench-train", i))
    return trained.final, trained.train_time_s


def raytda_sweep_core(setting: Setting, data: Dataset, configs: list[Config], k: int,
                      compute: ComputeArgs) -> dict:
    """The sweep with raytda's work sharing, written against the compute core.

    Trains each of the max-I models once, computes each member's TRAK block and Q once,
    and builds every configuration's scores from the shared members (naive I=3 reuses
    I=1 and I=2's members; Dropout members of model i reuse its one training run).
    """
    t0 = time.perf_counter()
    max_i = max(c.I for c in configs)
    states, train_s = {}, 0.0
    for i in range(max_i):
        states[i], t = train_member_model(setting, data, i)
        train_s += t
        log(f"raytda sweep: trained model {i} in {t:.1f} s")
    blocks: dict[tuple[int, int | None], torch.Tensor] = {}
    qs: dict[tuple[int, int | None], torch.Tensor] = {}
    t_serve = time.perf_counter()
    for c in configs:
        for member in c.members():
            if member in blocks:
                continue
            i, d = member
            model = load_weights(setting.model, states[i])
            mask = member_mask(setting, i, d)
            proj = GaussianProjector(n_params(model), k, member_proj_seed(i, d),
                                     compute.proj_memory_bytes, compute.device,
                                     cpu_gemm=compute.cpu_gemm)
            blocks[member], _ = trak_block(model, data, proj, mask, None, compute)
            qs[member] = forward_outputs(model, data.x_train, data.y_train, mask, "train",
                                         compute.forward_batch, compute.device)[1]
        log(f"raytda sweep: {c.label} ready ({len(blocks)} member blocks so far)")
    serve_s = time.perf_counter() - t_serve
    scores = {c.label: trak_scores([qs[m] for m in c.members()], [blocks[m] for m in c.members()])
              for c in configs}
    return {"wall_s": time.perf_counter() - t0, "train_s": train_s, "serve_s": serve_s,
            "trainings": max_i, "member_blocks": len(blocks), "scores": scores}


# The public Sweep API shares the same work through its artifact store, but it always trains
# the LDS models as well, which the dattri loop does not; timing it would compare different
# work. The benchmark therefore drives the same compute-core calls that the sweep's jobs make.
def raytda_sweep(setting: Setting, data: Dataset, configs: list[Config], k: int,
                 compute: ComputeArgs) -> dict:
    """Time the Table-1-style sweep on raytda's side (see the LEAD note above)."""
    return raytda_sweep_core(setting, data, configs, k, compute)


def dattri_sweep_loop(setting: Setting, data: Dataset, configs: list[Config], k: int,
                      batch: int) -> dict:
    """The same sweep as a plain loop over dattri: every configuration from scratch.

    Each configuration trains its own I models (same trainer and seeds as raytda's, so the
    same weights) and runs one TRAKAttributor over its I (naive) or I*D (dropout) members;
    fixed dropout masks ride along in the checkpoints as buffers (``FixedMaskMLP``).
    """
    t0 = time.perf_counter()
    train_s = serve_s = 0.0
    trainings = servings = 0
    scores = {}
    for c in configs:
        states = {}
        for i in range(c.I):
            states[i], t = train_member_model(setting, data, i)
            train_s += t
            trainings += 1
        t1 = time.perf_counter()
        if c.kind == "naive":
            model: nn.Module = build_model(setting.model)
            ckpts = [states[i] for i, _ in c.members()]
        else:
            model = FixedMaskMLP(setting.model)
            ckpts = []
            for i, d in c.members():
                spec = member_mask(setting, i, d)
                from raytda.core.masks import fixed_masks

                masks = fixed_masks(spec, model.net.mask_sizes)
                ck = {f"net.{key}": v for key, v in states[i].items()}
                ck.update({f"mask{s}": m for s, m in enumerate(masks)})
                ckpts.append(ck)
        scores[c.label], _ = serve_dattri(model, ckpts, data, k, batch)
        serve_s += time.perf_counter() - t1
        servings += len(ckpts)
        log(f"dattri loop: {c.label} done, {time.perf_counter() - t0:.0f} s so far")
    return {"wall_s": time.perf_counter() - t0, "train_s": train_s, "serve_s": serve_s,
            "trainings": trainings, "member_blocks": servings, "scores": scores}


def dattri_member_time(args: argparse.Namespace, serving: dict | None, setting: Setting,
                       data: Dataset) -> tuple[int, float]:
    """dattri's fastest batch size and its single-member serving time.

    Taken from the serving section when it ran; otherwise one member is served now at each
    of ``--dattri-batches``.
    """
    if serving and serving.get("dattri"):
        best = min(serving["dattri"], key=lambda b: min(serving["dattri"][b]))
        return best, min(serving["dattri"][best])
    state, _ = train_member_model(setting, data, 0)
    by_batch = {b: serve_dattri(build_model(setting.model), [state], data, args.proj_dim, b)[1]
                for b in args.dattri_batches}
    log(f"dattri single member: {by_batch} s by batch size")
    best = min(by_batch, key=by_batch.get)
    return best, by_batch[best]


def run_sweep(args: argparse.Namespace, setting: Setting, data: Dataset,
              serving: dict | None) -> None:
    configs = table1_configs(args.sweep_max_i, args.sweep_d)
    sweep_setting = get_setting("mnist-mlp", data_dir=args.data_dir, n_train=args.n_train,
                                n_test=args.n_test, epochs=args.sweep_epochs)
    compute = ComputeArgs(grad_batch=args.grad_batch, cpu_gemm=args.cpu_gemm,
                          sparse_inputs=args.sparse_inputs)
    log(f"sweep: {', '.join(c.label for c in configs)}")
    r = raytda_sweep(sweep_setting, data, configs, args.proj_dim, compute)
    n_train_loop = sum(c.I for c in configs)
    n_serve_loop = sum(len(c.members()) for c in configs)
    rows = [["raytda (shared work)", r["trainings"], r["member_blocks"], f"{r['train_s']:.0f}",
             f"{r['serve_s']:.0f}", f"{r['wall_s']:.0f}", "1.00", "measured"]]
    if dattri_available() and not args.skip_dattri:
        d_batch, per_member = dattri_member_time(args, serving, sweep_setting, data)
        # The estimate uses this run's own measurements: raytda's time per training (same
        # trainer, same seeds) and dattri's best single-member serving time.
        per_train = r["train_s"] / r["trainings"]
        est_train, est_serve = n_train_loop * per_train, n_serve_loop * per_member
        rows.append([f"dattri loop (batch {d_batch})", n_train_loop, n_serve_loop,
                     f"{est_train:.0f}", f"{est_serve:.0f}", f"{est_train + est_serve:.0f}",
                     f"{(est_train + est_serve) / r['wall_s']:.2f}",
                     "estimated from one member" + ("" if args.with_dattri_sweep
                                                    else " (--with-dattri-sweep to measure)")])
        if args.with_dattri_sweep:
            d = dattri_sweep_loop(sweep_setting, data, configs, args.proj_dim, d_batch)
            agree = statistics.mean(mean_row_corr(r["scores"][c.label], d["scores"][c.label])
                                    for c in configs)
            rows.append([f"dattri loop (batch {d_batch})", d["trainings"], d["member_blocks"],
                         f"{d['train_s']:.0f}", f"{d['serve_s']:.0f}", f"{d['wall_s']:.0f}",
                         f"{d['wall_s'] / r['wall_s']:.2f}", f"measured (score r={agree:.3f})"])
    print(f"\n## Table-1-style sweep, TRAK k={args.proj_dim}: naive I=1..{args.sweep_max_i} and "
          f"Dropout I=1..{args.sweep_max_i} x D={args.sweep_d} ({len(configs)} configurations; "
          f"models trained {args.sweep_epochs} epochs on random halves; LDS not included)\n")
    print(table(["implementation", "trainings", "member servings", "train s", "serve s",
                 "wall s", "time / raytda", "how"], rows))


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("RAYTDA_MNIST", str(DEFAULT_DATA)),
                    help="directory with the MNIST IDX files (default: %(default)s)")
    ap.add_argument("--n-train", type=int, default=5000)
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=10,
                    help="training epochs of the served checkpoint (serving cost does not "
                         "depend on it; the paper's recipe uses 100)")
    ap.add_argument("--proj-dim", type=int, default=2048)
    ap.add_argument("--grad-batch", type=int, default=ComputeArgs().grad_batch,
                    help="raytda's per-sample gradient batch")
    ap.add_argument("--dattri-batches", type=lambda s: [int(b) for b in s.split(",")],
                    default=[64, 500, 1000], help="comma-separated (default: 64,500,1000)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="passes over the dattri batch sizes (each paired with a raytda run)")
    ap.add_argument("--skip-dattri", action="store_true")
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                    help="also time raytda with a bfloat16 projection (an option, not the "
                         "default; reported beside, never instead of, fp32)")
    ap.add_argument("--skip-serving", action="store_true",
                    help="with --sweep: only the sweep (the dattri loop then runs, or is "
                         "estimated from one member served at each --dattri-batches size)")
    ap.add_argument("--sweep", action="store_true",
                    help="also time a Table-1-style sweep (raytda side ~10+ min on 2 cores)")
    ap.add_argument("--with-dattri-sweep", action="store_true",
                    help="with --sweep: run the dattri loop for real (hours on 2 cores) "
                         "instead of estimating it")
    ap.add_argument("--sweep-max-i", type=int, default=5)
    ap.add_argument("--sweep-d", type=int, default=10)
    ap.add_argument("--sweep-epochs", type=int, default=10)
    ap.add_argument("--sparse-inputs", action=argparse.BooleanOptionalAction, default=True,
                    help="skip the projection work of exactly-zero inputs (raytda's default; "
                         "same features)")
    ap.add_argument("--cpu-gemm", choices=gemm.BACKENDS, default="auto",
                    help="BLAS for raytda's projection: auto (faster of the two, measured), "
                         "torch (MKL) or numpy (OpenBLAS)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (default: torch's choice)")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_setting(args)
    if loaded is None:
        return 0
    setting, data = loaded
    print(f"# raytda serving benchmark ({time.strftime('%Y-%m-%d %H:%M')}, torch "
          f"{torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.1f} at start)")
    np.random.seed(0)
    serving = None if args.skip_serving else run_serving(args, setting, data)
    if args.sweep:
        run_sweep(args, setting, data, serving)
    print(f"\n(load average {os.getloadavg()[0]:.1f} at end)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
