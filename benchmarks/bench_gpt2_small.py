"""GPT-2 small (124M) attributed on this CPU: raytda's factorized TRAK members, the dense
path extrapolated, and a peer library (dattri-LLM) on the same weights, data and f.

One command, one table, scores in ``OUT/scores.npz``::

    python benchmarks/bench_gpt2_small.py --out /work/runs/gpt2/full

- **Model**: ``GPT2LMHeadModel(GPT2Config(attn_implementation="eager"))``, GPT-2 small's
  shape (12 layers, d 768, 12 heads, vocabulary 50257, 124.4M parameters) built from its
  config, nothing downloaded; the attention-weight dropout is set to 0 (the other dropout
  sites keep GPT-2's 0.1) so every dropout site drops hidden units.
- **Data**: tiny Shakespeare (``--text``) split into words and punctuation, each mapped to
  a GPT-2 id by a fixed rule (its rank by frequency in the text, ties alphabetical), cut
  into windows of ``--seq`` + 1 tokens: train windows from the first 90% of the text,
  queries from the rest. A synthetic seeded stream stands in when the file is missing.
- **The model attributed** is a user's checkpoint: the seed-0 initialisation trained for
  ``--pretrain-steps`` Adam steps on the train windows, outside raytda, saved as
  safetensors. The Task's ``train`` loads it (so raytda's training time for the naive and
  dropout members is a load); the LoRA Ensemble's 3 adapters (rank 8 on ``c_attn``) are
  fine-tuned by raytda, 1 epoch on their own random halves.
- **raytda**: TRAK, ``features="factorized"``, k = ``--k``, attribution only, in-process
  executor: naive I=1, dropout I=1 D=1 and LoRA I=1 L=3; for the peer, also Grad-Dot on
  the naive member's stored features. Costs are raytda's cost columns; ``x fwd+bwd`` divides
  each member's featurization time per sample by one plain forward + backward per sample,
  measured in this process on ``--plain-samples`` sequences.
- **Dense** (per-sample gradients by vmap, then a Gaussian P of k columns) is not run: its
  P is 124M x k floats (1 TB at k = 2048). ``bench_scale.py``'s gpt2-small dense row is run
  (gradients of 4 samples, 65,536 rows of P drawn and multiplied) and scaled to the
  member's samples.
- **Peer**: dattri-LLM's ``TracInAttributor`` (score = <g_train, g_test>) with LoGRA
  capture-time projection (each layer's input and output-gradient factors projected to
  ``--peer-proj-dim``, so p^2 dims per layer) on the 48 ``c_attn`` / ``c_proj`` / ``c_fc``
  layers and ``lm_head``, f the same sequence log-likelihood; a second run at
  ``--peer-ref-proj-dim`` (32: 50,176 dims) is a near-exact Grad-Dot reference for the
  score correlations. Each runs in its own subprocess (peak memory = growth of ru_maxrss
  after the model is loaded).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from common import log, table

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TEXT = REPO.parent / "shared" / "data" / "shakespeare" / "input.txt"
VOCAB = 50257  # GPT-2's


# --------------------------------------------------------------------------- data


def word_ids(text: str) -> list[int]:
    """Words, punctuation marks and line ends of ``text`` as GPT-2 ids: each distinct
    token's rank by frequency in the text (ties alphabetical), folded into the vocabulary."""
    tokens = re.findall(r"\w+|[^\w\s]|\n", text)
    counts = collections.Counter(tokens)
    rank = {w: i for i, (w, _) in enumerate(sorted(counts.items(), key=lambda c: (-c[1], c[0])))}
    return [rank[w] % VOCAB for w in tokens]


def windows(text_path: Path | None, n_train: int, n_test: int, seq: int
            ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor], str]:
    """((x, y) train, (x, y) test, source): disjoint windows of seq + 1 tokens, y = x shifted."""
    if text_path is not None and text_path.is_file():
        ids, source = torch.tensor(word_ids(text_path.read_text(encoding="utf-8"))), "shakespeare"
    else:  # synthetic: a seeded uniform stream (timing does not depend on the values)
        gen = torch.Generator().manual_seed(0)
        ids, source = torch.randint(0, VOCAB, (2 * (n_train + n_test) * (seq + 1),),
                                    generator=gen), "synthetic"
    cut = int(0.9 * len(ids))
    train, test = ids[:cut].unfold(0, seq + 1, seq + 1), ids[cut:].unfold(0, seq + 1, seq + 1)
    if len(train) < n_train or len(test) < n_test:
        raise SystemExit(f"the text gives {len(train)} train and {len(test)} test windows of "
                         f"{seq + 1} tokens; asked for {n_train} and {n_test}")
    # Evenly spread over each part, so the rows do not all come from one scene.
    tr = train[torch.linspace(0, len(train) - 1, n_train).long()]
    te = test[torch.linspace(0, len(test) - 1, n_test).long()]
    return (tr[:, :-1], tr[:, 1:]), (te[:, :-1], te[:, 1:]), source


# --------------------------------------------------------------------------- model


def build_gpt2(seq: int) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(attn_implementation="eager", attn_pdrop=0.0,
                                      n_positions=max(1024, seq)))


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(input_ids=x).logits


def seq_nll(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sequence negative log-likelihood, -f (summed over positions)."""
    lp = torch.log_softmax(logits(model, x).float(), -1)
    return -lp.gather(-1, y.unsqueeze(-1)).squeeze(-1).sum(-1)


def pretrain(path: Path, x: torch.Tensor, y: torch.Tensor, steps: int, batch: int) -> float:
    """The user's own checkpoint: seed-0 init, ``steps`` Adam steps (lr 3e-4) on (x, y)
    batches in order, saved as safetensors. Returns the seconds it took (0 if it exists)."""
    from safetensors.torch import save_file

    if path.is_file():
        return 0.0
    torch.manual_seed(0)
    model = build_gpt2(x.shape[1]).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    t0 = time.perf_counter()
    for s in range(steps):
        rows = torch.arange(s * batch, (s + 1) * batch) % len(x)
        opt.zero_grad()
        (seq_nll(model, x[rows], y[rows]).sum() / y[rows].numel()).backward()
        opt.step()
    seconds = time.perf_counter() - t0
    # clones: the tied wte / lm_head share storage, which safetensors refuses
    save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()},
              str(path))
    return seconds


def load_checkpoint(model: nn.Module, path: Path) -> nn.Module:
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(path)))
    return model


# --------------------------------------------------------------------------- raytda


def make_task(ckpt: Path, train, test, source: str, seq: int):
    from raytda import LoRASpec, Recipe, Task
    from raytda.plan.models import checkpoint_digest

    digest = checkpoint_digest(ckpt)

    class GPT2Small(Task):
        """GPT-2 small's shape on word windows; its base model is the user's checkpoint."""

        name = "gpt2-small-words"
        version = "1"
        dropout_mask_dims = 1  # the same hidden units dropped at every position
        # The recipe trains the LoRA adapters only (base models are the checkpoint).
        recipe = Recipe(optimizer="adam", lr=1e-3, batch_size=16, epochs=1)
        lora = LoRASpec(r=8, alpha=16.0, targets=("c_attn",), base_epochs=1, epochs=1)

        def config(self) -> dict[str, Any]:
            return {"checkpoint": digest, "data": source, "n_train": len(train[0]),
                    "n_test": len(test[0]), "seq": seq}

        def build_model(self) -> nn.Module:
            return build_gpt2(seq)

        def forward(self, model, x):
            return logits(model, x)

        def output(self):
            from raytda.core.outputs import GENERATIVE

            return GENERATIVE

        def train(self, model, data, seed, device, recipe=None):
            load_checkpoint(model, ckpt)  # the imported checkpoint is the trained model
            return {}

        def train_data(self):
            return train

        def test_data(self):
            return test

    return GPT2Small()


CONFIGS = (("trak", "naive:I=1"), ("trak", "dropout:I=1,D=1"), ("trak", "lora:I=1,L=3"))


def grad_dot_of(sweep, ensemble: str) -> np.ndarray:
    """Grad-Dot scores (n_test, n_train) from the features TRAK's member block stores:
    raytda's own Grad-Dot on the same member gives the same numbers up to the block's
    float16 storage of the features (before it: relative difference 8e-8 on a small run)
    but featurizes the member a second time."""
    from raytda.core.trak import unpack_features

    (block,) = sweep.evaluation(ensemble, method="trak").blocks()
    tensors, _ = sweep.store.get(block.key)
    test = unpack_features(tensors["test_features"], tensors.get("test_scale"))
    train = unpack_features(tensors["train_features"], tensors.get("train_scale"))
    return (test @ train.T).numpy()


def run_raytda(task, store: str, k: int, batch: int, configs=CONFIGS):
    from raytda import Sweep
    from raytda.core.args import ComputeArgs
    from raytda.methods import Method

    pairs = [(Method(m, proj_dim=k, features="factorized"), e) for m, e in configs]
    compute = ComputeArgs(grad_batch=batch, forward_batch=batch, train_threads=None)
    sweep = Sweep(task, configurations=pairs, lds=None, store=store, executor="local",
                  compute=compute, progress=False)
    return sweep, sweep.run()


def plain_pass_s(ckpt: Path, x: torch.Tensor, y: torch.Tensor, batch: int) -> float:
    """Seconds per sample of one plain forward + backward (weight gradients), best of 2."""
    return plain_s_per_sample(load_checkpoint(build_gpt2(x.shape[1]), ckpt).eval(), x, y, batch)


def plain_s_per_sample(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> float:
    """Best of 2 timings of a plain forward + backward over ``x``, per sample."""
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        for b0 in range(0, len(x), batch):
            model.zero_grad(set_to_none=True)
            seq_nll(model, x[b0:b0 + batch], y[b0:b0 + batch]).sum().backward()
        best = min(best, time.perf_counter() - t0)
    return best / len(x)


def dense_row(threads: int) -> dict:
    """bench_scale.py's gpt2-small dense row (4 samples measured, P scaled), in a subprocess."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_scale import row_in_subprocess

    a = argparse.Namespace(threads=threads, repeats=1, dense_samples=4, dense_rows=1 << 16,
                           samples=0)
    return row_in_subprocess("gpt2-small", "dense", a)


# --------------------------------------------------------------------------- peer


def peer_scores(ckpt: Path, train, test, proj_dim: int, batch: int, out: Path) -> dict:
    """dattri-LLM TracIn with LoGRA projection; writes (n_test, n_train) scores to ``out``
    in our row order and returns its time and peak memory."""
    from dattri_llm import (
        AttributionArguments,
        AttributionTask,
        HookManagerConfig,
        TracInAttributor,
        hash_sample,
    )

    model = load_checkpoint(build_gpt2(train[0].shape[1]), ckpt).eval()

    def rows(xy):
        return [{"input_ids": x, "labels": y} for x, y in zip(*xy)]

    def loss(m, b):  # summed over samples: each sample's gradient is its own f's
        return seq_nll(m, b["input_ids"], b["labels"]).sum()

    hooks = HookManagerConfig(
        linear_io=[r"^transformer\.h\.\d+\.(attn|mlp)\.(c_attn|c_proj|c_fc)$", r"^lm_head$"],
        capture_style="auto",
        projection_kwargs={"__default__": {"style": "logra", "proj_dim": proj_dim,
                                           "proj_seed": 0, "proj_type": "normal",
                                           "proj_max_batch_size": batch}})
    # (no "device" key: dattri-LLM 0.1.0 passes it twice to its projector and fails; the
    # projection runs on the tensors' device, the CPU, without it)
    with tempfile.TemporaryDirectory() as tmp:
        args = AttributionArguments(output_dir=tmp, per_device_train_batch_size=batch,
                                    per_device_eval_batch_size=batch, use_cpu=True,
                                    max_grad_norm=None, seed=0)
        attributor = TracInAttributor(args, task=AttributionTask(loss, model))
        base = rss_bytes()  # after the model loaded, as member_only's loaded_rss_bytes
        t0 = time.perf_counter()
        score = attributor.attribute(rows(train), rows(test), hook_config=hooks)
        seconds = time.perf_counter() - t0
        peak = peak_rss_bytes() - base
    # (n_train, n_test) in its store order; a sample's id is the hash of the inputs the
    # model was called with (input_ids: the windows are distinct)
    ids, m = score.agnostic_matrix()
    where = {h: i for i, h in enumerate(ids)}
    order = [where[hash_sample({"input_ids": x})] for x in train[0]]
    test_where = {h: j for j, h in enumerate(score.test_ids)}
    test_order = [test_where[hash_sample({"input_ids": x})] for x in test[0]]
    np.save(out, m[order][:, test_order].T.double().numpy())
    return {"seconds": seconds, "peak_bytes": peak, "peak_rss_total": peak_rss_bytes(),
            "layers": len(score.layer_name or []),
            "dim": len(score.layer_name or []) * proj_dim ** 2}


def correlations(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean over queries (rows) of the Spearman and Pearson correlations of two score sets."""
    from scipy.stats import pearsonr, spearmanr

    return (float(np.mean([spearmanr(u, v)[0] for u, v in zip(a, b)])),
            float(np.mean([pearsonr(u, v)[0] for u, v in zip(a, b)])))


def cached(path: Path, compute):
    """``compute()``, stored as JSON at ``path``; read back when it is there."""
    if path.is_file():
        return json.loads(path.read_text())
    value = compute()
    path.write_text(json.dumps(value))
    return value


# --------------------------------------------------------------------------- issue 28


def rss_bytes() -> int:
    """This process's resident set now (Linux /proc; torch's allocations included)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """This process's RSS high-water mark so far: VmHWM of /proc/self/status, the peak of
    its own address space. Not ru_maxrss: Linux folds the parent's high-water mark into a
    child's ru_maxrss at fork + exec, so a subprocess started by a large parent reads
    the parent's peak (seen here: a plain pass and a member both "peaking" at exactly the
    parent's 3.6 GB)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def exact_reference(ckpt: Path, train, test, n_ref: int, q_block: int, out: Path) -> dict:
    """Grad-Dot from exact per-sample gradients of every parameter (124.4M; the tied
    wte / lm_head once, both uses summed by autograd), f = the sequence log-likelihood,
    dropout off. Never all held: ``q_block`` query gradients (flat float32) are held at a
    time and the ``n_ref`` train gradients are streamed one at a time against them, so
    each train gradient is computed ceil(n_test / q_block) times. Writes (n_test, n_ref)
    scores to ``out``."""
    model = load_checkpoint(build_gpt2(train[0].shape[1]), ckpt).eval()
    params = list(model.parameters())
    width = sum(p.numel() for p in params)

    def grad_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        f = -seq_nll(model, x[None], y[None]).sum()
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(f, params)])

    n_test = len(test[0])
    scores = np.zeros((n_test, n_ref))
    t0 = time.perf_counter()
    for q0 in range(0, n_test, q_block):
        rows = range(q0, min(n_test, q0 + q_block))
        held = torch.empty(len(rows), width)  # q_block x 124.4M float32
        for j, r in enumerate(rows):
            held[j] = grad_of(test[0][r], test[1][r])
        for i in range(n_ref):
            g = grad_of(train[0][i], train[1][i])
            scores[q0:q0 + len(rows), i] = (held @ g).double().numpy()
        del held
        log(f"  exact: queries {rows.start}-{rows.stop - 1} done")
    np.save(out, scores)
    return {"seconds": time.perf_counter() - t0, "width": width, "n_ref": n_ref,
            "q_block": q_block, "peak_rss_bytes": peak_rss_bytes()}


def plain_only(ckpt: Path, train, batch: int, samples: int) -> dict:
    """One plain forward + backward (weight gradients) per sample, best of 2, in a
    fresh process: seconds per sample and the process's peak RSS (for the memory ratio)."""
    model = load_checkpoint(build_gpt2(train[0].shape[1]), ckpt).eval()
    loaded = rss_bytes()
    s = plain_s_per_sample(model, train[0][:samples], train[1][:samples], batch)
    return {"s_per_sample": s, "peak_rss_bytes": peak_rss_bytes(), "loaded_rss_bytes": loaded}


def member_only(ckpt: Path, train, test, source: str, seq: int, features: str, k: int,
                batch: int, out_npz: Path, profile: bool) -> dict:
    """One whole raytda TRAK member as a sweep's member job computes it, timed by
    section in a fresh process: train features and Q from one hooked pass (the
    features part's ``features_and_q``), test features, TRAK's solve (``kernel_payload``)
    and storing the payload (``torch.save``). Saves the float32 features to ``out_npz``.
    With ``profile``, then one batch under torch.profiler (the hooked pass's
    ``record_function`` ranges)."""
    from raytda.core.args import ComputeArgs
    from raytda.features import features_from
    from raytda.methods.trak import kernel_payload

    task = make_task(ckpt, train, test, source, seq)
    data = task.data()
    net = task.network(load_checkpoint(build_gpt2(seq), ckpt)).eval()
    loaded = rss_bytes()
    args = ComputeArgs(grad_batch=batch, forward_batch=batch, train_threads=None)
    part = features_from(features)
    t = {}
    t0 = time.perf_counter()
    fz = part.featurizer(net, k, 0, args, task.output(), data, keep=False)
    t["build featurizer"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if part.q_in_pass:
        train_f, q = fz.features_and_q(data.train, None, "train")
        t["train features + Q (one pass)"] = time.perf_counter() - t0
    else:
        train_f = fz.features(data.train, None, "train")
        t["train features"] = time.perf_counter() - t0
        from raytda.core.grads import samples_outputs

        t0 = time.perf_counter()
        _, q = samples_outputs(net, data.train, None, "train", batch, "cpu", task.output())
        t["Q (separate forward)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    test_f = fz.features(data.test, None, "test")
    t["test features"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    payload, info = kernel_payload(train_f, test_f, None)
    t["TRAK solve (pack + kernel)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        torch.save({**payload, "q": q}, Path(tmp) / "member.pt")
    t["store payload"] = time.perf_counter() - t0
    peak = peak_rss_bytes()
    np.savez(out_npz, train=train_f.numpy(), test=test_f.numpy(), q=q.numpy())
    res = {"sections": t, "seconds": sum(t.values()), "dim": int(fz.dim),
           "peak_rss_bytes": peak, "loaded_rss_bytes": loaded, "ridge": info["ridge"],
           "n_rows": data.n_train + data.n_test}
    if profile:
        res["profile"] = profile_batch(fz, data, batch)
    return res


def profile_batch(fz, data, batch: int) -> dict:
    """Seconds of each part of one hooked pass over ``batch`` train rows, from
    torch.profiler's record_function ranges (CPU time): the forward's own (the model),
    the input projections in forward hooks, Q, the backward's own (autograd through the
    model, no weight gradients) and the gradient projections in tensor hooks."""
    from torch.profiler import ProfilerActivity, profile

    rows = data.train.subset(np.arange(batch))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        fz.features_and_q(rows, None, "train")
        wall = time.perf_counter() - t0
    total: dict[str, float] = {}
    for ev in prof.key_averages():
        if ev.key.startswith("factorized."):
            total[ev.key] = ev.cpu_time_total / 1e6
    fwd, pin = total.get("factorized.forward", 0.0), total.get("factorized.project_input", 0.0)
    bwd, pg = total.get("factorized.backward", 0.0), total.get("factorized.project_grad", 0.0)
    # the tensor hooks run inside the backward's range on the calling thread
    parts = {"forward (model)": fwd - pin, "forward hooks: input projections": pin,
             "Q from the logits": total.get("factorized.q", 0.0),
             "backward (autograd, no weight grads)": bwd - pg,
             "backward hooks: grad projections + outer products": pg}
    parts["rest (batching, copies)"] = max(0.0, wall - sum(parts.values()))
    return {"rows": batch, "wall_s": wall, "parts": parts,
            "top_ops": [(e.key, e.self_cpu_time_total / 1e6)
                        for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
                        [:12]]}


def spearman_vs(ref: np.ndarray, est: np.ndarray) -> tuple[float, float]:
    """(mean over queries of the per-query Spearman, Spearman of all pairs pooled)."""
    from scipy.stats import spearmanr

    per = float(np.mean([spearmanr(u, v)[0] for u, v in zip(ref, est)]))
    return per, float(spearmanr(ref.ravel(), est.ravel())[0])


def in_subprocess(argv: list[str], extra: list[str], result: Path) -> dict:
    """Run this script with ``argv + extra`` in a fresh process (its own ru_maxrss);
    read the JSON it writes to ``result``; cached: a file already there is read back."""
    if not result.is_file():
        cmd = [sys.executable, __file__] + argv + extra
        done = subprocess.run(cmd, text=True, capture_output=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(extra)} failed:\n{done.stderr[-3000:]}")
    return json.loads(result.read_text())


def issue28(a, argv: list[str], out: Path, train, test, source: str, ckpt: Path) -> None:
    """The issue-28 measurements (see ``--help``): exact reference, Spearman against it,
    interleaved speed and memory, a member's profile."""
    from raytda.features import FEATURES

    size = f"{a.n_train}+{a.n_test}x{a.seq}"
    n_rows = a.n_train + a.n_test
    wanted = [f for f in a.features.split(",") if f]
    names = [f for f in wanted if f in FEATURES]
    pending = [f for f in wanted if f not in FEATURES]
    for f in pending:
        log(f"features {f!r} not registered in this checkout: pending, not measured")
    ref_path = out / f"exact_{size}_ref{a.exact_train}.npy"
    ref_json = out / f"exact_{size}_ref{a.exact_train}.json"
    if a.report_only:  # what the store of runs holds, nothing computed
        report28(a, out, size, n_rows, names, pending, ref_path, ref_json, stored_runs(a, out, size, names))
        return
    ref_meta = cached(ref_json, lambda: exact_reference(
        ckpt, train, test, a.exact_train, a.exact_query_block, ref_path))
    log(f"exact reference: {ref_meta['seconds']:.0f} s")
    runs: list[dict] = []
    for r in range(a.rounds):
        # each round: plain pass, then members and peer runs alternating
        runs.append({"what": "plain", "round": r, **in_subprocess(
            argv, ["--plain-only", str(out / f"plain_r{r}_{size}.json")],
            out / f"plain_r{r}_{size}.json")})
        peers = [a.peer_proj_dim, a.peer_ref_proj_dim] if r == 0 else [a.peer_proj_dim]
        order: list[tuple[str, object]] = []
        for i in range(max(len(names), len(peers))):
            if i < len(names):
                order.append(("member", names[i]))
            if i < len(peers) and peers[i]:
                order.append(("peer", peers[i]))
        for what, arg in order:
            log(f"round {r}: {what} {arg}")
            if what == "member":
                res = out / f"member_r{r}_{arg}_{size}_k{a.k}.json"
                extra = ["--member-only", str(res), "--features", str(arg)] + (
                    ["--profile"] if r == 0 else [])
                runs.append({"what": "member", "name": arg, "round": r,
                             **in_subprocess(argv, extra, res)})
            else:
                res = out / f"peer_r{r}_{size}_p{arg}.json"
                runs.append({"what": "peer", "p": arg, "round": r, **in_subprocess(
                    argv, ["--peer-only", str(res), "--peer-proj-dim", str(arg)], res)})
    report28(a, out, size, n_rows, names, pending, ref_path, ref_json, runs)


def stored_runs(a, out: Path, size: str, names: list[str]) -> list[dict]:
    """The interleaved runs whose results ``out`` holds, in the order they run."""
    runs = []
    for r in range(a.rounds):
        found = [("plain", {}, out / f"plain_r{r}_{size}.json")]
        found += [("member", {"name": n}, out / f"member_r{r}_{n}_{size}_k{a.k}.json")
                  for n in names]
        found += [("peer", {"p": p}, out / f"peer_r{r}_{size}_p{p}.json")
                  for p in (a.peer_proj_dim, a.peer_ref_proj_dim) if p]
        runs += [{"what": w, "round": r, **extra, **json.loads(f.read_text())}
                 for w, extra, f in found if f.is_file()]
    return runs


def report28(a, out, size, n_rows, names, pending, ref_path, ref_json, runs) -> None:
    mib = 2 ** 20
    if not ref_path.is_file():
        print("\n(no exact reference yet)")
        return
    ref, ref_meta = np.load(ref_path), json.loads(ref_json.read_text())
    n_ref = ref.shape[1]
    print(f"\n## Agreement with exact Grad-Dot ({n_ref} train x {a.n_test} queries, "
          f"{ref_meta['width']:,} parameters, {ref_meta['seconds']:.0f} s)\n")
    rows = []
    for name in names:
        npz = out / f"member_r0_{name}_{size}_k{a.k}.npz"
        if not npz.is_file():
            continue
        z = np.load(npz)
        est = z["test"].astype(np.float64) @ z["train"][:n_ref].astype(np.float64).T
        per, pooled = spearman_vs(ref, est)
        rows.append([f"raytda {name}", f"k = {a.k} ({z['train'].shape[1]} dims)",
                     f"{per:.3f}", f"{pooled:.3f}"])
    for p in (a.peer_proj_dim, a.peer_ref_proj_dim):
        f = out / f"peer_scores_{size}_p{p}.npy"
        if p and f.is_file():
            per, pooled = spearman_vs(ref, np.load(f)[:, :n_ref])
            rows.append(["dattri-LLM TracIn (LoGRA)", f"p = {p} ({49 * p * p} dims)",
                         f"{per:.3f}", f"{pooled:.3f}"])
    for f in pending:
        rows.append([f"raytda {f}", "pending (not in this checkout)", "", ""])
    print(table(["scores", "dims", "Spearman (mean per query)", "Spearman (pooled)"], rows))

    print(f"\n## Speed and memory, interleaved (per sample over {n_rows} sequences)\n")
    rows = []
    for run in runs:
        plain = next((x for x in runs if x["what"] == "plain" and x["round"] == run["round"]),
                     None)
        if plain is None:
            continue
        ps, pm = plain["s_per_sample"], plain["peak_rss_bytes"]
        if run["what"] == "plain":
            rows.append([run["round"], "plain forward + backward", f"{ps:.3f}", "", "1.00",
                         f"{pm / mib:.0f}", "1.00", f"{(pm - run['loaded_rss_bytes']) / mib:.0f}"])
        elif run["what"] == "member":
            sec = run["sections"]
            feat = sum(v for k, v in sec.items() if "features" in k)
            rows.append([run["round"], f"raytda TRAK member, {run['name']} k={a.k}",
                         f"{run['seconds'] / n_rows:.3f}", f"{feat / n_rows:.3f}",
                         f"{feat / n_rows / ps:.2f}", f"{run['peak_rss_bytes'] / mib:.0f}",
                         f"{run['peak_rss_bytes'] / pm:.2f}",
                         f"{(run['peak_rss_bytes'] - run['loaded_rss_bytes']) / mib:.0f}"])
        else:
            rows.append([run["round"], f"dattri-LLM TracIn p={run['p']}",
                         f"{run['seconds'] / n_rows:.3f}", "",
                         f"{run['seconds'] / n_rows / ps:.2f}",
                         f"{run['peak_rss_total'] / mib:.0f}" if "peak_rss_total" in run else "",
                         f"{run['peak_rss_total'] / pm:.2f}" if "peak_rss_total" in run else "",
                         f"{run['peak_bytes'] / mib:.0f}"])
    print(table(["round", "run", "whole s/sample", "featurize s/sample", "x plain",
                 "peak RSS MiB", "x plain peak", "growth after load MiB"], rows))

    for run in runs:
        if run["what"] != "member" or "profile" not in run:
            continue
        print(f"\n## Where a member's seconds go ({run['name']}, round {run['round']})\n")
        total = run["seconds"]
        print(table(["section", "s", "share"],
                    [[k, f"{v:.1f}", f"{v / total:.0%}"] for k, v in run["sections"].items()]
                    + [["whole member", f"{total:.1f}", "100%"]]))
        prof = run["profile"]
        w = prof["wall_s"]
        print(f"\nOne hooked pass over {prof['rows']} train sequences under torch.profiler "
              f"({w:.1f} s wall, CPU time of the record_function ranges):\n")
        print(table(["part", "s", "share"],
                    [[k, f"{v:.2f}", f"{v / w:.0%}"] for k, v in prof["parts"].items()]))
        print("\nTop ops by self CPU time: " + "; ".join(f"{k} {v:.2f} s"
                                                          for k, v in prof["top_ops"]))


# --------------------------------------------------------------------------- issue 30


def ekfac_mode(a: argparse.Namespace, ckpt: Path, train, test, out: Path) -> dict:
    """EK-FAC (raytda's and kronfluence's) on the checkpoint, dropout off, over the first
    ``--ekfac-train`` / ``--ekfac-test`` windows (each its seq + 1 tokens, the labels the
    ids themselves); prints the comparison and writes it to ``OUT/ekfac_<size>.json``."""
    sys.path.insert(0, str(Path(__file__).parent))
    from ekfac_gpt2_small import ekfac_vs_kronfluence

    def ids(windows, n):  # (x, y = x shifted) back to whole windows
        x, y = windows
        return torch.cat([x[:n], y[:n, -1:]], 1)

    model = load_checkpoint(build_gpt2(train[0].shape[1]), ckpt)
    res = ekfac_vs_kronfluence(model, ids(train, a.ekfac_train), ids(test, a.ekfac_test),
                               batch=min(a.batch, a.ekfac_train), log=True)
    res["load_end"] = os.getloadavg()[0]
    for k, v in res.items():
        print(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}")
    size = f"{a.ekfac_train}+{a.ekfac_test}x{a.seq}"
    (out / f"ekfac_{size}.json").write_text(json.dumps(res, indent=1))
    return res


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/bench_gpt2_small", help="checkpoint, store, scores")
    p.add_argument("--text", default=str(DEFAULT_TEXT))
    p.add_argument("--n-train", type=int, default=256)
    p.add_argument("--n-test", type=int, default=16)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--k", type=int, default=2048)
    p.add_argument("--batch", type=int, default=16, help="sequences per featurization batch")
    p.add_argument("--pretrain-steps", type=int, default=8)
    p.add_argument("--pretrain-batch", type=int, default=8)
    p.add_argument("--plain-samples", type=int, default=32)
    p.add_argument("--peer-proj-dim", type=int, default=6)
    p.add_argument("--peer-ref-proj-dim", type=int, default=32,
                   help="a second peer run at this LoGRA width (49 p^2 dims) as a near-exact "
                        "Grad-Dot reference for the correlations; 0: none")
    p.add_argument("--skip-dense", action="store_true")
    p.add_argument("--skip-peer", action="store_true")
    p.add_argument("--features", default="factorized,sketch",
                   help="issue 28: features parts to measure (comma-separated; one not "
                        "registered in this checkout is reported as pending)")
    p.add_argument("--exact-train", type=int, default=64,
                   help="issue 28: train rows of the exact Grad-Dot reference")
    p.add_argument("--exact-query-block", type=int, default=8,
                   help="issue 28: query gradients held at once (0.5 GB each)")
    p.add_argument("--rounds", type=int, default=2,
                   help="issue 28: rounds of interleaved raytda member / dattri-LLM runs")
    p.add_argument("--sweep", action="store_true",
                   help="also run the issue-18 Sweep table (naive, dropout members)")
    p.add_argument("--lora", action="store_true", help="with --sweep: the LoRA row too")
    p.add_argument("--ekfac", action="store_true",
                   help="issue 30: EK-FAC fit and scores of the checkpoint against "
                        "kronfluence's on --ekfac-train / --ekfac-test of the windows "
                        "(ekfac_gpt2_small.py's ekfac_vs_kronfluence), then stop")
    p.add_argument("--ekfac-train", type=int, default=8)
    p.add_argument("--ekfac-test", type=int, default=4)
    p.add_argument("--peer-only", help=argparse.SUPPRESS)  # subprocess mode: result json path
    p.add_argument("--member-only", help=argparse.SUPPRESS)
    p.add_argument("--plain-only", help=argparse.SUPPRESS)
    p.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--report-only", action="store_true",
                   help="issue 28: print the tables from what --out holds, compute nothing")
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    train, test, source = windows(Path(a.text), a.n_train, a.n_test, a.seq)
    ckpt = out / (f"gpt2_small_{source}_{a.n_train}x{a.seq}_{a.pretrain_steps}x"
                  f"{a.pretrain_batch}.safetensors")
    if a.peer_only:
        r = peer_scores(ckpt, train, test, a.peer_proj_dim, a.batch,
                        out / f"peer_scores_{a.n_train}+{a.n_test}x{a.seq}_p{a.peer_proj_dim}.npy")
        Path(a.peer_only).write_text(json.dumps(r))
        return 0
    if a.plain_only:
        Path(a.plain_only).write_text(json.dumps(plain_only(ckpt, train, a.batch,
                                                            a.plain_samples)))
        return 0
    if a.member_only:
        npz = Path(a.member_only).with_suffix(".npz")
        r = member_only(ckpt, train, test, source, a.seq, a.features, a.k, a.batch, npz,
                        a.profile)
        Path(a.member_only).write_text(json.dumps(r))
        return 0

    load0 = os.getloadavg()[0]
    print(f"# bench_gpt2_small: {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average at start {load0:.2f}; data "
          f"{source}, {a.n_train} train + {a.n_test} query windows of {a.seq} tokens\n")
    if a.report_only:
        issue28(a, [], out, train, test, source, ckpt)
        return 0
    log(f"pretraining the checkpoint ({a.pretrain_steps} steps) unless present")
    pre_s = pretrain(ckpt, *train, a.pretrain_steps, a.pretrain_batch)
    log(f"  {pre_s:.0f} s -> {ckpt}")
    if a.ekfac:
        ekfac_mode(a, ckpt, train, test, out)
        return 0
    passed = [x for x in (argv if argv is not None else sys.argv[1:])]
    issue28(a, passed, out, train, test, source, ckpt)
    if not a.sweep:
        print(f"\nload average at end {os.getloadavg()[0]:.2f}")
        return 0
    # Measured once per --out and size (a rerun reads them back): plain pass, dense, peer.
    size = f"{a.n_train}+{a.n_test}x{a.seq}"
    plain = cached(out / f"plain_{size}.json", lambda: plain_pass_s(
        ckpt, train[0][:a.plain_samples], train[1][:a.plain_samples], a.batch))
    log(f"plain forward + backward: {plain:.3f} s/sample")

    task = make_task(ckpt, train, test, source, a.seq)
    configs = CONFIGS if a.lora else tuple(c for c in CONFIGS if not c[1].startswith("lora"))
    sweep, res = run_raytda(task, str(out / "store"), a.k, a.batch, configs)
    n_rows = a.n_train + a.n_test
    dense = None if a.skip_dense else cached(out / "dense_k2048.json",  # bench_scale.py: k = 2048
                                             lambda: dense_row(torch.get_num_threads()))
    rows, scores = [], {}
    for _, r in res.iterrows():
        members = int(r["n_members"])
        # featurization: the member blocks' own time (serve s adds Q and the solve)
        blocks = sweep.evaluation(r["label"], method=r["method"]).blocks()
        feat = sum(sweep.store.meta(b.key)["serve_time_s"] for b in blocks) / len(blocks)
        dense_s = "" if dense is None or r["ensemble"] == "lora" else \
            dense["s_per_sample"] * n_rows
        rows.append([r["method"], r["label"], members, f"{float(r['train_time_s']):.1f}",
                     f"{float(r['serve_time_s']):.1f}", f"{feat:.1f}",
                     f"{feat / n_rows:.3f}", f"{feat / n_rows / plain:.2f}",
                     f"{float(r['peak_mem_bytes']) / 2**20:.0f}",
                     dense_s and f"{dense_s:.0f}", dense_s and f"{dense_s / feat:.0f}"])
        scores[f"{r['method']}@{r['label']}"] = sweep.scores(
            r["label"], method=r["method"]).double().numpy()
    headers = ["method", "ensemble", "members", "train s", "serve s", "featurize s/member",
               "s/sample", "x fwd+bwd", "peak MiB", "dense s/member (extrap.)", "dense / ours"]
    scores["grad-dot@naive I=1"] = grad_dot_of(sweep, "naive:I=1")
    for pdim in () if a.skip_peer else tuple(d for d in (a.peer_proj_dim, a.peer_ref_proj_dim) if d):
        peer_json = out / f"peer_{size}_p{pdim}.json"
        if not peer_json.is_file():
            log(f"peer: dattri-LLM TracIn (LoGRA p={pdim})")
            cmd = [sys.executable, __file__] + list(argv if argv is not None else sys.argv[1:]) + [
                "--peer-only", str(peer_json), "--peer-proj-dim", str(pdim)]
            done = subprocess.run(cmd, text=True, capture_output=True)
            if done.returncode != 0:
                raise RuntimeError(f"peer failed:\n{done.stderr[-3000:]}")
        peer = json.loads(peer_json.read_text())
        scores[f"peer p={pdim}"] = np.load(out / f"peer_scores_{size}_p{pdim}.npy")
        rows.append(["dattri-LLM TracIn", f"LoGRA p={pdim} ({peer['dim']} dims)", 1,
                     "", f"{peer['seconds']:.1f}", f"{peer['seconds']:.1f}",
                     f"{peer['seconds'] / n_rows:.3f}", f"{peer['seconds'] / n_rows / plain:.2f}",
                     f"{peer['peak_bytes'] / 2**20:.0f}", "", ""])
    print(table(headers, rows))
    print(f"\nplain forward + backward: {plain:.3f} s/sample ({a.plain_samples} sequences, "
          f"batch {a.batch}); checkpoint: {a.pretrain_steps} Adam steps of {a.pretrain_batch} "
          f"sequences from the seed-0 init ({pre_s:.0f} s; 0 = reused)")
    if dense is not None:
        print(f"dense (extrapolated, per sample): {dense['s_per_sample']:.2f} s, "
              f"{dense['note']}; peak +{dense['peak_mb']:.0f} MB for its 4 samples")
    print(f"\nscore correlations, mean over {a.n_test} queries of {a.n_train} train rows:")
    names = [n for n in ("trak@naive I=1", "grad-dot@naive I=1", f"peer p={a.peer_proj_dim}",
                         f"peer p={a.peer_ref_proj_dim}") if n in scores]
    for i, u in enumerate(names):
        for v in names[i + 1:]:
            sp, pe = correlations(scores[u], scores[v])
            print(f"  {u} vs {v}: Spearman {sp:.3f}, Pearson {pe:.3f}")
    np.savez(out / "scores.npz", **{re.sub(r"\W+", "_", k): v
                                    for k, v in scores.items()})
    print(f"\nscores: {out / 'scores.npz'}; load average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
