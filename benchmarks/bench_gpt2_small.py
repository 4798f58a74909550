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
import resource
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
    from raytda.plan.jobs import checkpoint_digest

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
    model = load_checkpoint(build_gpt2(x.shape[1]), ckpt).eval()
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
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        t0 = time.perf_counter()
        score = attributor.attribute(rows(train), rows(test), hook_config=hooks)
        seconds = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    # (n_train, n_test) in its store order; a sample's id is the hash of the inputs the
    # model was called with (input_ids: the windows are distinct)
    ids, m = score.agnostic_matrix()
    where = {h: i for i, h in enumerate(ids)}
    order = [where[hash_sample({"input_ids": x})] for x in train[0]]
    test_where = {h: j for j, h in enumerate(score.test_ids)}
    test_order = [test_where[hash_sample({"input_ids": x})] for x in test[0]]
    np.save(out, m[order][:, test_order].T.double().numpy())
    return {"seconds": seconds, "peak_bytes": peak, "layers": len(score.layer_name or []),
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
    p.add_argument("--peer-only", help=argparse.SUPPRESS)  # subprocess mode: result json path
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

    load0 = os.getloadavg()[0]
    print(f"# bench_gpt2_small: {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average at start {load0:.2f}; data "
          f"{source}, {a.n_train} train + {a.n_test} query windows of {a.seq} tokens\n")
    log(f"pretraining the checkpoint ({a.pretrain_steps} steps) unless present")
    pre_s = pretrain(ckpt, *train, a.pretrain_steps, a.pretrain_batch)
    log(f"  {pre_s:.0f} s -> {ckpt}")
    # Measured once per --out and size (a rerun reads them back): plain pass, dense, peer.
    size = f"{a.n_train}+{a.n_test}x{a.seq}"
    plain = cached(out / f"plain_{size}.json", lambda: plain_pass_s(
        ckpt, train[0][:a.plain_samples], train[1][:a.plain_samples], a.batch))
    log(f"plain forward + backward: {plain:.3f} s/sample")

    task = make_task(ckpt, train, test, source, a.seq)
    sweep, res = run_raytda(task, str(out / "store"), a.k, a.batch)
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
