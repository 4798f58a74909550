"""Shared test fixtures.

Core fixtures (kept tiny on purpose so that every core test file runs in seconds): the
'toy-mlp' task, its synthetic data and two trained models. Session fixtures added by
other layers (e.g. a Ray session) belong below this block.
"""

from __future__ import annotations

import os

import pytest
from torch import nn

from raytda import Recipe, Task
from raytda.core.train import load_weights, train_model
from raytda.data import Dataset
from raytda.tasks import get_task
from raytda.tasks.mlp import ToyMLPTask


@pytest.fixture(scope="session")
def toy_task() -> ToyMLPTask:
    """The built-in synthetic task: 60 train / 12 test samples, an 8-16-16-3 MLP."""
    return get_task("toy-mlp")


@pytest.fixture(scope="session")
def toy_data(toy_task: ToyMLPTask) -> Dataset:
    (x, y), (xt, yt) = toy_task.load()
    return Dataset(x, y, xt, yt)


@pytest.fixture(scope="session")
def toy_models(toy_task: ToyMLPTask, toy_data: Dataset) -> tuple[nn.Module, nn.Module]:
    """Two independently trained toy models (seeds 0 and 1), in eval mode.

    Tests must not modify them in place: they are shared by the whole session.
    """
    out = []
    for seed in (0, 1):
        trained = train_model(toy_task.build_model, toy_task.recipe,
                              toy_data.x_train, toy_data.y_train, seed=seed)
        out.append(load_weights(toy_task.build_model(), trained.final, toy_data.x_train[:1]))
    return out[0], out[1]


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tests with one torch thread (tiny models: more threads only add
    synchronization, and on a shared machine they make such tests several times slower)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def toy_model(toy_models: tuple[nn.Module, nn.Module]) -> nn.Module:
    return toy_models[0]


# --------------------------------------------------------------------------- Ray session
# Ray starts its workers at niceness 15. On a machine where other processes keep the cores
# busy (CI under load, the suite run beside two CPU hogs), such workers get a few percent
# of a core and a Ray test crawls for many minutes. Every Ray runtime the suite starts,
# in this process or in `ray start` subprocesses (which inherit the environment), runs its
# workers at the normal priority instead.
os.environ.setdefault("RAY_worker_niceness", "0")

# Added for the Ray executor / Tune tests (tests/run): one local Ray runtime per test
# session, since ray.init costs ~10 s and ~0.8 GiB. Tests that need it request
# `ray_session`; everything else stays on the in-process executor.


@pytest.fixture(scope="session")
def ray_session():
    """A local 2-CPU Ray runtime shared by the whole test session; yields the ray module."""
    ray = pytest.importorskip("ray")
    started = False
    if not ray.is_initialized():
        # On loopback: without it Ray binds the host's external address.
        ray.init(address="local", num_cpus=2, object_store_memory=200 * 1024**2,
                 _node_ip_address="127.0.0.1",
                 include_dashboard=False, logging_level="WARNING", log_to_driver=False)
        started = True
    yield ray
    if started:
        ray.shutdown()


# --------------------------------------------------------------------------- token rows
# A task with dict rows (tokenizer output of ragged lengths) and a tiny GPT-2 from its
# config, for the tests of new token rows (the Attributor given row dicts, `raytda serve`
# taking them over HTTP). Defined here so both share one finished sweep.

TOKEN_VOCAB = 16


def token_rows(n: int, seed: int, lo: int = 3, hi: int = 11) -> list[dict]:
    """Tokenizer-shaped rows (input_ids, attention_mask) of lo to hi - 1 tokens."""
    import torch

    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        length = int(torch.randint(lo, hi, (1,), generator=g))
        rows.append({"input_ids": torch.randint(1, TOKEN_VOCAB, (length,), generator=g).tolist(),
                     "attention_mask": [1] * length})
    return rows


class TinyTokenLM(Task):
    """A 2-layer GPT-2 (vocabulary 16, 24 positions) on 24 train and 4 test token rows;
    labels made from input_ids by the collate, as a causal LM's collator makes them."""

    name = "tiny-token-lm"
    version = "1"
    dropout_mask_dims = 1
    recipe = Recipe(optimizer="adam", lr=3e-3, batch_size=8, epochs=2)

    def __init__(self) -> None:
        from raytda.data.collate import PadCollate

        self.collate = PadCollate(labels_from="input_ids")

    def build_model(self) -> nn.Module:
        import transformers

        transformers.utils.logging.set_verbosity_error()  # bos/eos ids beyond a tiny vocab
        return transformers.GPT2LMHeadModel(transformers.GPT2Config(
            vocab_size=TOKEN_VOCAB, n_positions=24, n_embd=16, n_layer=2, n_head=2,
            attn_pdrop=0.0, embd_pdrop=0.1, resid_pdrop=0.1, attn_implementation="eager"))

    def output(self):
        from raytda.core.outputs import CAUSAL_LM

        return CAUSAL_LM

    def loss(self, logits, y):
        from raytda.core.outputs import next_token_cross_entropy

        return next_token_cross_entropy(logits, y)

    def train_data(self):
        from raytda.data.samples import DictSamples

        return DictSamples(token_rows(24, 0), collate=self.collate)

    def test_data(self):
        from raytda.data.samples import DictSamples

        return DictSamples(token_rows(4, 1), collate=self.collate)


#: the configuration the token-row tests serve (fixed dropout masks: two members)
TOKEN_ENSEMBLE = "dropout:I=1,D=2"


@pytest.fixture(scope="session")
def token_task() -> TinyTokenLM:
    pytest.importorskip("transformers")
    return TinyTokenLM()


@pytest.fixture(scope="session")
def token_sweep(tmp_path_factory, token_task):
    """TinyTokenLM's finished sweep (TRAK, k = 8, dropout I=1 D=2), no LDS."""
    from raytda import Sweep

    sweep = Sweep(token_task, "trak", [TOKEN_ENSEMBLE], lds=None,
                  store=str(tmp_path_factory.mktemp("token-store")), proj_dim=8,
                  progress=False)
    sweep.run()
    return sweep


@pytest.fixture(scope="session")
def make_token_rows():
    """``make_token_rows(n, seed)``: TinyTokenLM-shaped rows (seeds other than 0 and 1
    are rows it never saw)."""
    return token_rows
