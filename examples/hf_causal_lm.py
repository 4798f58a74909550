"""Bring your own model: a Hugging Face causal LM (GPT-Neo, built from a config) on text.

A tiny ``transformers`` GPT-Neo (2 layers, hidden size 32, 4 heads, a character vocabulary
taken from the data) is attributed with TRAK: naive ensembles, a LoRA Ensemble on the
attention's ``q_proj`` / ``v_proj`` (peft) and a Dropout Ensemble. Nothing is downloaded:
the model is ``GPTNeoForCausalLM(GPTNeoConfig(...))`` with random initial weights.

Why GPT-Neo: its attention has separate ``q_proj`` and ``v_proj`` modules (LoRA targets)
and its dropout is ``nn.Dropout`` modules (``transformer.drop`` after the embeddings, and
per layer ``attn.attention.resid_dropout`` and ``mlp.dropout``), which are raytda's
dropout sites. Llama, for one, has neither: its only dropout is a functional call inside
the attention, which no forward hook can drive. The attention-weight dropout is left at 0
(``attention_dropout``) so that every site drops hidden units; ``dropout_mask_dims = 1``
then drops the same units at every position of a sequence.

The model output is :data:`raytda.core.outputs.GENERATIVE`: f is a sequence's
log-likelihood ``sum_t log p(y_t | x_<=t)``; ``forward`` returns the ``.logits`` of the
model's output object. Eager attention (``attn_implementation="eager"``) keeps the model's
forward plain tensor code.

Per-sample gradients: ``torch.func.vmap`` over this model works (eager attention, no
data-dependent control flow in the forward), so TRAK's features take the vmap path for the
full model, the LoRA members (adapter parameters only) and the dropout-masked members
alike; raytda's per-sample autograd loop (the fallback that logs "vmap over ... failed")
is not used. ``tests/examples/test_examples.py`` checks that no fallback is logged.

Data: tiny Shakespeare (``input.txt``) from ``--data-dir``, ``$RAYTDA_DATA/shakespeare``
or ``~/raytda-data/shakespeare``; without it, synthetic text from a seeded word chain::

    python examples/hf_causal_lm.py --data-dir ../shared/data/shakespeare --out runs/hf
"""

from __future__ import annotations

import argparse
import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from raytda import LDSSpec, LoRASpec, Recipe, Sweep, Task

DEFAULT_ENSEMBLES = ("naive:I=1", "naive:I=2", "lora:I=1,L=2", "dropout:I=1,D=3")
TEXT_FILE = "input.txt"
WORDS = ("the", "king", "shall", "speak", "to", "his", "lord", "and", "my", "good", "heart",
         "is", "not", "what", "thou", "art", "love", "of", "night")


def synthetic_text(n_chars: int, seed: int = 0) -> str:
    """Sentences from a seeded chain over a few words: structure a tiny model learns fast."""
    rng = np.random.default_rng(seed)
    nxt = {w: rng.choice(len(WORDS), size=3, replace=False) for w in WORDS}
    out, word, size = [], WORDS[0], 0
    while size < n_chars:
        out.append(word)
        size += len(word) + 1
        word = WORDS[int(rng.choice(nxt[word]))]
    return " ".join(out)[:n_chars]


def find_text(data_dir: str | None) -> Path | None:
    """``input.txt`` in ``data_dir``, ``$RAYTDA_DATA/shakespeare`` or
    ``~/raytda-data/shakespeare``, whichever is given first; None when it is not there."""
    if data_dir is not None:
        root = Path(data_dir)
    elif os.environ.get("RAYTDA_DATA"):
        root = Path(os.environ["RAYTDA_DATA"]) / "shakespeare"
    else:
        root = Path("~/raytda-data/shakespeare")
    path = root.expanduser() / TEXT_FILE
    return path if path.is_file() else None


@lru_cache(maxsize=2)
def char_windows(path: str | None, seq_len: int, n_train: int, n_test: int, seed: int = 0
                 ) -> tuple[int, tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """(vocab size, train (x, y), test (x, y)): non-overlapping windows of ``seq_len + 1``
    characters, x the first ``seq_len`` tokens and y the next token at every position.
    Train windows come from the first 90% of the text, test windows from the rest."""
    text = Path(path).read_text(encoding="utf-8") if path else synthetic_text(200_000, seed)
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    tokens = np.fromiter((index[c] for c in text), dtype=np.int64, count=len(text))
    cut, w = int(0.9 * len(tokens)), seq_len + 1
    rng = np.random.default_rng(seed)

    def split(part: np.ndarray, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        wins = part[: len(part) // w * w].reshape(-1, w)
        if n > len(wins):
            raise ValueError(f"asked for {n} windows of {w} characters, the text has {len(wins)}")
        chosen = torch.from_numpy(wins[np.sort(rng.choice(len(wins), size=n, replace=False))])
        return chosen[:, :-1].contiguous(), chosen[:, 1:].contiguous()

    return len(vocab), split(tokens[:cut], n_train), split(tokens[cut:], n_test)


class CharGPTNeo(Task):
    """A character-level GPT-Neo from ``transformers`` on tiny Shakespeare (or synthetic
    text), attributed by sequence log-likelihood."""

    name = "hf-gptneo-chars"
    version = "1"
    # One dropout mask per sequence: the same hidden units dropped at every position.
    dropout_mask_dims = 1
    # peft adapts these module names in every layer; r=4 keeps the adapter small.
    lora = LoRASpec(r=4, alpha=8.0, targets=("q_proj", "v_proj"))

    def __init__(self, data_dir: str | None = None, n_train: int = 200, n_test: int = 20,
                 seq_len: int = 32, epochs: int = 4) -> None:
        self.path = find_text(data_dir)
        self.n_train, self.n_test, self.seq_len = n_train, n_test, seq_len
        self.recipe = Recipe(optimizer="adam", lr=3e-3, batch_size=20, epochs=epochs)

    def config(self) -> dict[str, Any]:
        # Which text is part of the content (Shakespeare or synthetic), not where it lives.
        return {"text": "file" if self.path else "synthetic", "n_train": self.n_train,
                "n_test": self.n_test, "seq_len": self.seq_len, "hidden": 32, "layers": 2}

    def _data(self):
        return char_windows(None if self.path is None else str(self.path), self.seq_len,
                            self.n_train, self.n_test)

    def build_model(self) -> nn.Module:
        from transformers import GPTNeoConfig, GPTNeoForCausalLM

        config = GPTNeoConfig(
            vocab_size=self._data()[0], max_position_embeddings=self.seq_len,
            hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
            attention_types=[[["global"], 2]],     # both layers global (no local windows)
            embed_dropout=0.1, resid_dropout=0.1, attention_dropout=0.0,
            bos_token_id=0, eos_token_id=0, attn_implementation="eager")
        return GPTNeoForCausalLM(config)

    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model(input_ids=x).logits

    def output(self):
        from raytda.core.outputs import GENERATIVE

        return GENERATIVE

    def train_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._data()[1]

    def test_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._data()[2]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None, help=f"directory holding {TEXT_FILE} "
                   "(default $RAYTDA_DATA/shakespeare, else ~/raytda-data/shakespeare; "
                   "synthetic text when there is none)")
    p.add_argument("--n-train", type=int, default=200)
    p.add_argument("--n-test", type=int, default=20)
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--proj-dim", type=int, default=256)
    p.add_argument("--lds-m", type=int, default=10, help="LDS subsets (retrained models)")
    p.add_argument("--ensemble", action="append",
                   help=f"ensemble configuration (repeatable); default {' '.join(DEFAULT_ENSEMBLES)}")
    p.add_argument("--out", default="runs/hf_causal_lm", help="results, plot and the store")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def build_sweep(args: argparse.Namespace) -> Sweep:
    """The sweep ``main`` runs (also used to read its scores back from the store)."""
    task = CharGPTNeo(args.data_dir, args.n_train, args.n_test, args.seq_len, args.epochs)
    return Sweep(task, methods="trak", ensembles=args.ensemble or DEFAULT_ENSEMBLES,
                 lds=LDSSpec(m=args.lds_m), store=str(Path(args.out) / "store"),
                 proj_dim=args.proj_dim, progress=not args.quiet)


def main(argv: list[str] | None = None) -> int:
    from raytda.results import format_table, write_results

    args = parse_args(argv)
    sweep = build_sweep(args)
    task = sweep.spec.tasks[0]
    print(f"text: {task.path or 'synthetic (no input.txt found)'}")
    table = sweep.run()
    results = write_results(table, args.out, sweep.store.uri)
    plots = sweep.plot(args.out)
    print(format_table(table))
    print(f"\nresults: {results}; plot: {', '.join(str(p) for p in plots)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
