"""Character-level text as fixed-length token sequences, for generative settings.

A sample is a window of ``seq_len + 1`` consecutive tokens: ``x`` is its first ``seq_len``
tokens and ``y`` the same window shifted by one (the next token at every position). Both
are int64 tensors of shape (n, seq_len).

``load_text`` reads ``<root>/input.txt`` (tiny Shakespeare format: one plain-text file). The
vocabulary is the file's sorted set of characters (65 for tiny Shakespeare). The file has no
official split, so the first 90% of its characters are the training text and the last 10%
the test text (nanoGPT's convention). Each part is cut into non-overlapping windows, so no
two samples share text, and ``n_train`` / ``n_test`` of them are drawn with ``seed``.

``load_synthetic_text`` needs no files: sequences from a seeded sparse Markov chain over
``SYNTH_VOCAB`` tokens, with enough structure for a tiny model to learn in seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from raytda.data.base import DataError, Dataset, choose

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


def _pick(train: np.ndarray, test: np.ndarray, n_train: int, n_test: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    tr = train[choose(len(train), n_train, rng, "train")]
    te = test[choose(len(test), n_test, rng, "test")]

    def split(w: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(w[:, :-1].copy()), torch.from_numpy(w[:, 1:].copy())

    x_tr, y_tr = split(tr)
    x_te, y_te = split(te)
    return Dataset(x_tr, y_tr, x_te, y_te)


def load_text(root: str | Path | None, n_train: int, n_test: int, seq_len: int,
              seed: int = 0) -> Dataset:
    """Read ``<root>/input.txt`` and draw ``n_train`` / ``n_test`` windows of ``seq_len``
    predicted tokens with ``seed``."""
    if root is None:
        raise DataError(f"text data needs a directory holding {TEXT_FILE}: pass --data-dir DIR, "
                        f"e.g. the tiny Shakespeare folder")
    path = Path(root).expanduser() / TEXT_FILE
    if not path.is_file():
        raise DataError(f"text file {path} not found; the data directory must hold {TEXT_FILE} "
                        f"(plain text, e.g. tiny Shakespeare)")
    text = path.read_text(encoding="utf-8")
    tokens = encode(text, char_vocab(text))
    cut = int(TRAIN_FRACTION * len(tokens))
    return _pick(windows(tokens[:cut], seq_len), windows(tokens[cut:], seq_len), n_train, n_test,
                 seed)


def markov_chain(seed: int, vocab: int = SYNTH_VOCAB) -> np.ndarray:
    """(vocab, vocab) transition matrix where each token has 3 likely successors."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(vocab, vocab)) - 3.0
    for a in range(vocab):
        logits[a, rng.choice(vocab, size=3, replace=False)] += 4.0
    p = np.exp(logits)
    return p / p.sum(1, keepdims=True)


def load_synthetic_text(n_train: int, n_test: int, seq_len: int, seed: int = 0) -> Dataset:
    """Markov-chain sequences of ``seq_len`` predicted tokens; train and test drawn from the
    same chain."""
    rng = np.random.default_rng(3000 + seed)
    trans = markov_chain(3000 + seed)
    cum = trans.cumsum(1)
    n, w = n_train + n_test, seq_len + 1
    seqs = np.empty((n, w), dtype=np.int64)
    seqs[:, 0] = rng.integers(0, SYNTH_VOCAB, size=n)
    for t in range(1, w):
        u = rng.random(n)[:, None]
        seqs[:, t] = np.minimum((u > cum[seqs[:, t - 1]]).sum(1), SYNTH_VOCAB - 1)
    return _pick(seqs[:n_train], seqs[n_train:], n_train, n_test, seed)
