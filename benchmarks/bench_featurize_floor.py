"""The least a hook-based featurizer can spend on GPT-2 small: its pass without hooks.

Features captured by hooks (``factorized``, ``sketch``) need, for every covered layer, its
input on the forward and its output gradient on the backward. The output gradients are
what backpropagating the loss to the embeddings computes, so a hooked pass costs at least
one forward plus one backward *without weight gradients*; the hooks' own work comes on
top. This script times that floor against a plain forward + backward (weight gradients,
as training computes them), on the same sequences, in one process, alternating:

- ``plain``: loss.backward() with every parameter requiring gradients;
- ``input gradients only``: every parameter frozen, the embeddings' output requiring
  gradients (autograd then runs each layer's input-gradient products and skips the
  weight-gradient ones);
- ``forward``: the loss alone, no graph.

GPT-2 small (124M, ``transformers``' ``GPT2LMHeadModel``, random weights: the timing of
dense products does not depend on their values), the loss as ``bench_gpt2_small.py``
computes it (summed next-token NLL over the vocabulary).

    python benchmarks/bench_featurize_floor.py --samples 16 --batch 16 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gpt2_small import build_gpt2  # noqa: E402

from common import log, table  # noqa: E402


def nll(model, embeds: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed next-token NLL of the sequences whose token embeddings are ``embeds``."""
    logits = model(inputs_embeds=embeds).logits
    lp = torch.log_softmax(logits.float(), -1)
    return -lp.gather(-1, y.unsqueeze(-1)).sum()


def timed_pass(model, x: torch.Tensor, y: torch.Tensor, batch: int, mode: str) -> float:
    """Seconds per sequence of one pass of ``mode`` over ``x``."""
    wte = model.get_input_embeddings()
    weights = mode == "plain"
    for p in model.parameters():
        p.requires_grad_(weights)
    t0 = time.perf_counter()
    for b0 in range(0, len(x), batch):
        xb, yb = x[b0:b0 + batch], y[b0:b0 + batch]
        model.zero_grad(set_to_none=True)
        if mode == "forward":
            with torch.no_grad():
                nll(model, wte(xb), yb)
            continue
        embeds = wte(xb)
        if not weights:
            embeds = embeds.detach().requires_grad_(True)
        loss = nll(model, embeds, yb)
        if weights:
            loss.backward()
        else:
            torch.autograd.grad(loss, embeds)
    return (time.perf_counter() - t0) / len(x)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = build_gpt2(a.seq).eval()
    vocab = model.config.vocab_size
    x = torch.randint(vocab, (a.samples, a.seq))
    y = torch.randint(vocab, (a.samples, a.seq))
    modes = ["plain", "input gradients only", "forward"]
    keys = {"plain": "plain", "input gradients only": "input", "forward": "forward"}
    timed_pass(model, x[:2], y[:2], 2, "plain")  # warm-up, not timed
    load0 = os.getloadavg()
    times: dict[str, list[float]] = {m: [] for m in modes}
    for r in range(a.rounds):
        for m in (modes if r % 2 == 0 else modes[::-1]):
            times[m].append(timed_pass(model, x, y, a.batch, keys[m]))
        log(f"round {r}: " + ", ".join(f"{m} {times[m][-1]:.3f}" for m in modes))
    load1 = os.getloadavg()
    best = {m: min(v) for m, v in times.items()}
    # each round's own ratio (the passes of one round ran back to back), and their median
    ratios = {m: [t / p for t, p in zip(times[m], times["plain"])] for m in modes}
    rows = [[m, f"{best[m]:.3f}", f"{best[m] / best['plain']:.2f}",
             f"{statistics.median(ratios[m]):.2f} ({min(ratios[m]):.2f}-{max(ratios[m]):.2f})",
             ", ".join(f"{t:.3f}" for t in times[m])] for m in modes]
    text = "\n".join([
        "# A hooked featurizer's floor on GPT-2 small: forward + input-gradient backward",
        "",
        f"Command: `python benchmarks/bench_featurize_floor.py {' '.join(sys.argv[1:])}`",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads",
        f"Load average at start {tuple(round(v, 1) for v in load0)}, at end "
        f"{tuple(round(v, 1) for v in load1)}",
        f"{a.samples} sequences of {a.seq} tokens, batches of {a.batch}, {a.rounds} rounds "
        f"(order alternating); best of the rounds",
        "",
        table(["pass", "best s / sequence", "best x best plain",
               "x plain per round: median (range)", "rounds, s / sequence"], rows),
    ])
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
