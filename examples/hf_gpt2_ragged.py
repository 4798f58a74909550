"""Bring your own Hugging Face model and its batches: a GPT-2 on lines of ragged length.

The data are what a tokenizer gives, one dict per text: ``{"input_ids": [...],
"attention_mask": [1, ...]}``, each line of its own length (here a character-level
tokenizer, so nothing is downloaded). raytda reads such rows as
:class:`raytda.data.samples.DictSamples`: each batch is padded on the right by
:class:`raytda.data.collate.PadCollate` to its longest line, with ``labels`` made from
``input_ids`` as ``DataCollatorForLanguageModeling(mlm=False)`` makes them (padding -100).
The model is called as ``model(**batch)`` and its ``.logits`` are used (the Task's default
forward), so the Task says only how to build the model and what the data are.

The model is ``GPT2LMHeadModel(GPT2Config(...))`` with random initial weights (2 layers,
``n_embd`` 64, 4 heads). Its dropout sites are its ``nn.Dropout`` modules (after the
embeddings, then the attention output and the MLP of each layer; the attention-weight
dropout is left at 0, since its mask would cover a (T, T) map whose size changes with
the padded length). ``dropout_mask_dims = 1`` drops the same hidden units at every position.
LoRA adapters go on ``c_attn``, GPT-2's one fused projection to queries, keys and values
(it has no separate W_q and W_v; peft adapts its ``Conv1D`` with ``fan_in_fan_out``).

f is the next-token log-likelihood of the real tokens (:data:`raytda.core.outputs.CAUSAL_LM`,
which shifts the labels as the model's own loss does); padded positions, labelled -100 and
masked by ``attention_mask``, add nothing to f, Q or the gradients, so a line's scores do
not depend on how far its batch was padded (``tests/test_dict_rows.py`` checks that).

Data: the lines of tiny Shakespeare (``input.txt``) from ``--data-dir``,
``$RAYTDA_DATA/shakespeare`` or ``~/raytda-data/shakespeare``; without it, synthetic
sentences of 3 to 9 words from a seeded word chain::

    python examples/hf_gpt2_ragged.py --data-dir ../shared/data/shakespeare --out runs/gpt2
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from raytda import LDSSpec, LoRASpec, Recipe, Sweep, Task
from raytda.data.collate import PadCollate
from raytda.data.samples import DictSamples

DEFAULT_ENSEMBLES = ("naive:I=1", "naive:I=2", "lora:I=1,L=2", "dropout:I=1,D=3")
TEXT_FILE = "input.txt"
WORDS = ("the", "king", "shall", "speak", "to", "his", "lord", "and", "my", "good", "heart",
         "is", "not", "what", "thou", "art", "love", "of", "night")
EMBED, LAYERS, HEADS = 64, 2, 4


def synthetic_lines(n: int, seed: int = 0) -> list[str]:
    """Sentences of 3 to 9 words from a seeded chain over a few words."""
    rng = np.random.default_rng(seed)
    nxt = {w: rng.choice(len(WORDS), size=3, replace=False) for w in WORDS}
    lines = []
    for _ in range(n):
        word, words = WORDS[int(rng.integers(len(WORDS)))], []
        for _ in range(int(rng.integers(3, 10))):
            words.append(word)
            word = WORDS[int(rng.choice(nxt[word]))]
        lines.append(" ".join(words))
    return lines


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


def text_lines(path: str | None, min_chars: int, max_chars: int) -> list[str]:
    """The lines of spoken text (not speaker names) of ``min_chars`` to ``max_chars``
    characters, in file order; synthetic sentences without a file."""
    if path is None:
        lines = synthetic_lines(4000)
    else:
        raw = Path(path).read_text(encoding="utf-8").splitlines()
        lines = [s.strip() for s in raw if s.strip() and not s.rstrip().endswith(":")]
    return [s for s in lines if min_chars <= len(s) <= max_chars]


def tokenized(path: str | None, n_train: int, n_test: int, max_chars: int, seed: int = 0
              ) -> tuple[int, list[dict], list[dict]]:
    """(vocab size, train rows, test rows): lines as a character tokenizer gives them, a
    dict of ``input_ids`` and ``attention_mask`` per line. Train lines come from the first
    90% of the lines, test lines from the rest."""
    lines = text_lines(path, 8, max_chars)
    vocab = sorted(set("".join(lines)))
    index = {c: i for i, c in enumerate(vocab)}
    cut = int(0.9 * len(lines))
    rng = np.random.default_rng(seed)

    def rows(part: list[str], n: int) -> list[dict]:
        if n > len(part):
            raise ValueError(f"asked for {n} lines, the text has {len(part)} of 8 to "
                             f"{max_chars} characters")
        chosen = np.sort(rng.choice(len(part), size=n, replace=False))
        return [{"input_ids": [index[c] for c in part[i]], "attention_mask": [1] * len(part[i])}
                for i in chosen]

    return len(vocab), rows(lines[:cut], n_train), rows(lines[cut:], n_test)


class RaggedGPT2(Task):
    """A character-level GPT-2 from ``transformers`` on lines of ragged length, given as
    tokenizer rows and attributed by next-token log-likelihood."""

    name = "hf-gpt2-ragged"
    version = "1"
    # One dropout mask per line: the same hidden units dropped at every position.
    dropout_mask_dims = 1
    # peft adapts GPT-2's fused attention projection in every layer; r=4 keeps it small.
    lora = LoRASpec(r=4, alpha=8.0, targets=("c_attn",))

    def __init__(self, data_dir: str | None = None, n_train: int = 200, n_test: int = 20,
                 max_chars: int = 48, epochs: int = 4) -> None:
        self.path = find_text(data_dir)
        self.n_train, self.n_test, self.max_chars = n_train, n_test, max_chars
        self.recipe = Recipe(optimizer="adam", lr=3e-3, batch_size=20, epochs=epochs)
        self._rows: tuple[int, list[dict], list[dict]] | None = None

    def config(self) -> dict[str, Any]:
        # Which text is part of the content (Shakespeare or synthetic), not where it lives.
        return {"text": "file" if self.path else "synthetic", "n_train": self.n_train,
                "n_test": self.n_test, "max_chars": self.max_chars, "n_embd": EMBED,
                "n_layer": LAYERS}

    def _data(self) -> tuple[int, list[dict], list[dict]]:
        # Kept on the Task rather than in a functools.lru_cache: cloudpickle sends this
        # script's functions by value to Ray workers and Serve replicas, but an lru_cache
        # wrapper by reference, and they cannot import this script.
        if self._rows is None:
            self._rows = tokenized(None if self.path is None else str(self.path),
                                   self.n_train, self.n_test, self.max_chars)
        return self._rows

    def build_model(self) -> nn.Module:
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(
            vocab_size=self._data()[0], n_positions=self.max_chars, n_embd=EMBED,
            n_layer=LAYERS, n_head=HEADS, embd_pdrop=0.1, resid_pdrop=0.1, attn_pdrop=0.0,
            bos_token_id=0, eos_token_id=0, attn_implementation="eager")
        return GPT2LMHeadModel(config)

    def output(self):
        from raytda.core.outputs import CAUSAL_LM

        return CAUSAL_LM

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        from raytda.core.outputs import next_token_cross_entropy

        return next_token_cross_entropy(logits, y)

    def train_data(self) -> DictSamples:
        return DictSamples(self._data()[1], collate=PadCollate(labels_from="input_ids"))

    def test_data(self) -> DictSamples:
        return DictSamples(self._data()[2], collate=PadCollate(labels_from="input_ids"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None, help=f"directory holding {TEXT_FILE} "
                   "(default $RAYTDA_DATA/shakespeare, else ~/raytda-data/shakespeare; "
                   "synthetic sentences when there is none)")
    p.add_argument("--n-train", type=int, default=200)
    p.add_argument("--n-test", type=int, default=20)
    p.add_argument("--max-chars", type=int, default=48, help="longest line kept")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--proj-dim", type=int, default=256)
    p.add_argument("--lds-m", type=int, default=10, help="LDS subsets (retrained models)")
    p.add_argument("--ensemble", action="append",
                   help=f"ensemble configuration (repeatable); default {' '.join(DEFAULT_ENSEMBLES)}")
    p.add_argument("--out", default="runs/hf_gpt2_ragged", help="results, plot and the store")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def build_sweep(args: argparse.Namespace) -> Sweep:
    """The sweep ``main`` runs (also used to read its scores back from the store)."""
    task = RaggedGPT2(args.data_dir, args.n_train, args.n_test, args.max_chars, args.epochs)
    return Sweep(task, methods="trak", ensembles=args.ensemble or DEFAULT_ENSEMBLES,
                 lds=LDSSpec(m=args.lds_m), store=str(Path(args.out) / "store"),
                 proj_dim=args.proj_dim, progress=not args.quiet)


def main(argv: list[str] | None = None) -> int:
    from raytda.results import format_table, write_results

    args = parse_args(argv)
    sweep = build_sweep(args)
    task = sweep.spec.tasks[0]
    lengths = [len(r["input_ids"]) for r in task.train_data().dataset]
    print(f"text: {task.path or 'synthetic (no input.txt found)'}; train lines of "
          f"{min(lengths)} to {max(lengths)} characters")
    table = sweep.run()
    results = write_results(table, args.out, sweep.store.uri)
    plots = sweep.plot(args.out)
    print(format_table(table))
    print(f"\nresults: {results}; plot: {', '.join(str(p) for p in plots)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
