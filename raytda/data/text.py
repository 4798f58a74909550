"""Character-level text as fixed-length token sequences, for generative settings.

A sample is a window of ``seq_len + 1`` consecutive tokens: ``x`` is its first ``seq_len``
tokens and ``y`` the same window shifted by one (the next token at every position). Both
are int64 tensors of shape (n, seq_len).

``text`` reads ``<root>/input.txt`` (tiny Shakespeare format: one plain-text file). The
vocabulary is the file's sorted set of characters (65 for tiny Shakespeare). The file has no
official split, so the first 90% of its characters are the training text and the last 10%
the test text (nanoGPT's convention). Each part is cut into non-overlapping windows, so no
two samples share text, and ``n_train`` / ``n_test`` of them are drawn with the spec's seed.

``synthetic-text`` needs no files: sequences from a seeded sparse Markov chain over
``SYNTH_VOCAB`` tokens, with enough structure for a tiny model to learn in seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from raytda.data.base import DataError, Dataset, choose
from raytda.specs import DataSpec

TEXT_FILE = "input.txt"
TRAIN_FRACTION = 0.9
SYNTH_VOCAB = 12


def char_vocab(text: str) -> list[str]:
    """The sorted distinct characters of ``text``: token id i is ``vocab[i]``."""
    return sorted(set(text))


def encode(text: str, vocab: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(vocab)}
    return np.fromiter((index[c] for c in text), dtype=np.int64, count=len(text))


def windows(tokens: np.ndarray, seq_len: int) -> np.ndarray:
    """(n_windows, seq_len + 1) non-overlapping windows of a token stream."""
    w = seq_len + 1
    n = len(tokens) // w
    return tokens[: n * w].reshape(n, w)


def _pick(train: np.ndarray, test: np.ndarray, spec: DataSpec) -> Dataset:
    rng = np.random.default_rng(spec.seed)
    tr = train[choose(len(train), spec.n_train, rng, "train")]
    te = test[choose(len(test), spec.n_test, rng, "test")]

    def split(w: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(w[:, :-1].copy()), torch.from_numpy(w[:, 1:].copy())

    x_tr, y_tr = split(tr)
    x_te, y_te = split(te)
    return Dataset(x_tr, y_tr, x_te, y_te)


def load_text(spec: DataSpec) -> Dataset:
    """Read ``<root>/input.txt`` and sample the spec's train/test windows."""
    if spec.root is None:
        raise DataError(f"source 'text' needs a data directory holding {TEXT_FILE}: pass "
                        f"--data-dir DIR (or DataSpec.root), e.g. the tiny Shakespeare folder")
    path = Path(spec.root).expanduser() / TEXT_FILE
    if not path.is_file():
        raise DataError(f"text file {path} not found; the data directory must hold {TEXT_FILE} "
                        f"(plain text, e.g. tiny Shakespeare)")
    text = path.read_text(encoding="utf-8")
    tokens = encode(text, char_vocab(text))
    cut = int(TRAIN_FRACTION * len(tokens))
    return _pick(windows(tokens[:cut], spec.seq_len), windows(tokens[cut:], spec.seq_len), spec)


def markov_chain(seed: int, vocab: int = SYNTH_VOCAB) -> np.ndarray:
    """(vocab, vocab) transition matrix where each token has 3 likely successors."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(vocab, vocab)) - 3.0
    for a in range(vocab):
        logits[a, rng.choice(vocab, size=3, replace=False)] += 4.0
    p = np.exp(logits)
    return p / p.sum(1, keepdims=True)


def load_synthetic_text(spec: DataSpec) -> Dataset:
    """Markov-chain sequences; train and test drawn from the same chain."""
    rng = np.random.default_rng(3000 + spec.seed)
    trans = markov_chain(3000 + spec.seed)
    cum = trans.cumsum(1)
    n, w = spec.n_train + spec.n_test, spec.seq_len + 1
    seqs = np.empty((n, w), dtype=np.int64)
    seqs[:, 0] = rng.integers(0, SYNTH_VOCAB, size=n)
    for t in range(1, w):
        u = rng.random(n)[:, None]
        seqs[:, t] = np.minimum((u > cum[seqs[:, t - 1]]).sum(1), SYNTH_VOCAB - 1)
    return _pick(seqs[: spec.n_train], seqs[spec.n_train:], spec)
