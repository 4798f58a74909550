"""EK-FAC (raytda.core.ekfac): pairwise scores equal kronfluence 1.0.1's on the same model,
data, loss and damping (an MLP, and a GPT-2 from its config with dict batches); and the
properties that pin the math down without kronfluence: exact where the Kronecker model is
exact, grad-dot / damping as damping grows, factors a plain dict, unfactored layers listed.

Parity setup, the same on both sides: float64 models and factors; the empirical Fisher
(the data's labels for the curvature: kronfluence's ``use_empirical_fisher=True``;
raytda's default draws labels from the model, kronfluence's from its own RNG, so only the
empirical choice is comparable number for number); the curvature of the summed per-sample
cross-entropy; the train and test gradients of f (the margin, the sequence
log-likelihood) on both sides (kronfluence's ``compute_train_loss`` with ``sample=False``
and ``compute_measurement`` both return sum f); kronfluence's damping heuristic
(``damping_factor=None``) and an absolute damping.
"""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from raytda.core.batch import Batch
from raytda.core.ekfac import EKFAC
from raytda.core.network import Network
from raytda.core.outputs import (
    CAUSAL_LM,
    CLASSIFICATION,
    ModelOutput,
    margin,
    mean_cross_entropy,
    next_token_cross_entropy,
    next_token_loglik,
)
from raytda.data.samples import TensorSamples

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# kronfluence and raytda in float64 differ by rounding only: measured max |diff| / max |score|
# 2.3e-15 (MLP, heuristic damping), 6.1e-16 (MLP, damping 1e-2), 1.2e-14 (GPT-2); 1e-9
# leaves room for other BLAS orders while any real difference (a count, a transpose, a
# missing bias column) is O(1).
PARITY_RTOL = 1e-9
# The same batches on both sides: a Task's loss is a batch's mean over its kept tokens, so
# with rows of different lengths a row's weight in the curvature depends on its batch
# (measured: 5.9% apart at batches of 8 against 7 on the padded GPT-2 rows, 1.7e-14 at 7).
FIT_BATCH = 7


# ------------------------------------------------------------------ models and data


def mlp() -> Network:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 8, bias=False), nn.ReLU(),
                        nn.Linear(8, 3))
    return Network(net.double(), torch.zeros(1, 6, dtype=torch.float64)).eval()


def mlp_data(n: int, seed: int) -> TensorSamples:
    gen = torch.Generator().manual_seed(seed)
    return TensorSamples(torch.randn(n, 6, generator=gen, dtype=torch.float64),
                         torch.randint(0, 3, (n,), generator=gen))


def gpt2() -> tuple[nn.Module, Network]:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=40, n_positions=16,
                                  bos_token_id=0, eos_token_id=0, attn_implementation="eager",
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    lm = transformers.GPT2LMHeadModel(cfg).double().eval()
    net = Network(lm, Batch({"input_ids": torch.zeros(1, 8, dtype=torch.long)}),
                  mask_dims=1).eval()
    return lm, net


def token_data(n: int, t: int, seed: int) -> TensorSamples:
    """Right-padded rows of 3..t tokens: ids, attention_mask, labels -100 on padding."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, t + 1, (n,), generator=gen)
    mask = (torch.arange(t)[None] < lengths[:, None]).long()
    ids = torch.randint(1, 40, (n, t), generator=gen) * mask
    return TensorSamples(Batch({"input_ids": ids, "attention_mask": mask}),
                         ids.masked_fill(mask == 0, -100))


# ------------------------------------------------------------------ kronfluence side


class _Rows(Dataset):
    """A TensorSamples as kronfluence's loaders read it: (x, y), or a dict with labels."""

    def __init__(self, samples: TensorSamples) -> None:
        self.s = samples

    def __len__(self) -> int:
        return self.s.n

    def __getitem__(self, i: int):
        x, y = self.s.x[i], self.s.y[i]
        if isinstance(x, Batch):
            return {**{k: x[k] for k in x.keys()}, "labels": y}
        return x, y


def kronfluence_scores(model: nn.Module, train: TensorSamples, test: TensorSamples,
                       logits_of, loss_fn, f, dampings: list[float | None], tmp_path,
                       tracked: list[str] | None = None) -> list[torch.Tensor]:
    """kronfluence's EK-FAC pairwise scores (test x train) for each damping: factors of the
    summed loss with the data's labels (fitted once), scores of the gradients of sum f."""
    kf = pytest.importorskip("kronfluence")
    from kronfluence.arguments import FactorArguments, ScoreArguments

    logging.getLogger("kronfluence").setLevel(logging.ERROR)

    class Curvature(kf.Task):
        def compute_train_loss(self, batch, model, sample=False):
            assert not sample  # empirical Fisher
            logits, y = logits_of(model, batch)
            return loss_fn(logits, y) * y.shape[0]

        def compute_measurement(self, batch, model):
            logits, y = logits_of(model, batch)
            return f(logits, y).sum()

        def get_attention_mask(self, batch):
            return batch.get("attention_mask") if isinstance(batch, dict) else None

        def get_influence_tracked_modules(self):
            return tracked

    class Scores(Curvature):
        def compute_train_loss(self, batch, model, sample=False):
            return self.compute_measurement(batch, model)

    f64 = torch.float64
    factor_args = FactorArguments(
        strategy="ekfac", use_empirical_fisher=True, activation_covariance_dtype=f64,
        gradient_covariance_dtype=f64, per_sample_gradient_dtype=f64, lambda_dtype=f64)

    def analyzer(task):
        m = kf.prepare_model(copy.deepcopy(model), task)
        return kf.Analyzer("parity", m, task, cpu=True, disable_tqdm=True,
                           output_dir=str(tmp_path))

    analyzer(Curvature()).fit_all_factors("ekfac", _Rows(train), per_device_batch_size=FIT_BATCH,
                                          factor_args=factor_args)
    scorer = analyzer(Scores())
    out = []
    for i, damping in enumerate(dampings):
        score_args = ScoreArguments(damping_factor=damping, per_sample_gradient_dtype=f64,
                                    precondition_dtype=f64, score_dtype=f64)
        scorer.compute_pairwise_scores(f"scores{i}", "ekfac", _Rows(test), _Rows(train),
                                       per_device_query_batch_size=5,
                                       per_device_train_batch_size=7, score_args=score_args)
        out.append(scorer.load_pairwise_scores(f"scores{i}")["all_modules"])
    return out


def raytda_scores(net: nn.Module, train, test, loss_fn, output: ModelOutput,
                  dampings: list[float | None]) -> tuple[list[torch.Tensor], EKFAC]:
    ek = EKFAC(net, dtype=torch.float64)
    factors = ek.fit(train, loss_fn, fisher="empirical", batch_size=FIT_BATCH)
    return [ek.scores(factors, test, train, output, damping=d, batch_size=6)
            for d in dampings], ek


def assert_parity(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.shape == theirs.shape
    err = float((ours - theirs).abs().max() / theirs.abs().max())
    assert err < PARITY_RTOL, err


# ------------------------------------------------------------------ parity


def test_mlp_scores_equal_kronfluence(tmp_path):
    """With kronfluence's damping heuristic and with an absolute damping."""
    net = mlp()
    train, test = mlp_data(23, 1), mlp_data(9, 2)
    dampings = [None, 1e-2]
    ours, ek = raytda_scores(net, train, test, mean_cross_entropy, CLASSIFICATION, dampings)
    theirs = kronfluence_scores(net.module, train, test, lambda m, b: (m(b[0]), b[1]),
                                mean_cross_entropy, margin, dampings, tmp_path)
    for a, b in zip(ours, theirs, strict=True):
        assert_parity(a, b)
    assert ek.uncovered == []  # three Linear layers, all factored


def test_gpt2_dict_batch_scores_equal_kronfluence(tmp_path):
    """GPT-2's Conv1D layers are factored by raytda; kronfluence tracks only nn.Linear, so
    its copy has each Conv1D replaced by the same map as an nn.Linear (weight transposed)
    and tracks exactly those. The token embedding (tied to the head) and the LayerNorms
    are unfactored on raytda's side; the position embedding, which raytda factors and
    kronfluence cannot track, is frozen on raytda's side; all are untracked on
    kronfluence's. Rows are padded: padded positions count for nothing on either side
    (kronfluence's attention mask)."""
    transformers = pytest.importorskip("transformers")
    lm, net = gpt2()
    lm.transformer.wpe.weight.requires_grad_(False)
    train, test = token_data(13, 8, 1), token_data(5, 8, 2)
    (ours,), ek = raytda_scores(net, train, test, next_token_cross_entropy, CAUSAL_LM, [None])

    linear_lm = copy.deepcopy(lm)
    tracked = []
    for name, mod in list(linear_lm.named_modules()):
        if isinstance(mod, transformers.pytorch_utils.Conv1D):
            lin = nn.Linear(*mod.weight.shape, dtype=torch.float64)
            with torch.no_grad():
                lin.weight.copy_(mod.weight.T)
                lin.bias.copy_(mod.bias)
            parent, _, child = name.rpartition(".")
            setattr(linear_lm.get_submodule(parent), child, lin)
            tracked.append(name)
    assert sorted(ek.layers) == sorted(f"module.{n}.weight" for n in tracked)
    assert {u["kind"] for u in ek.uncovered} >= {"embedding+linear", "layernorm"}

    theirs = kronfluence_scores(
        linear_lm, train, test,
        lambda m, b: (m(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits,
                      b["labels"]),
        next_token_cross_entropy, next_token_loglik, [None], tmp_path, tracked)[0]
    assert_parity(ours, theirs)


# ------------------------------------------------------------------ properties


def per_sample_grads(net: nn.Module, samples: TensorSamples, fn) -> torch.Tensor:
    """(n, p) exact gradients of fn(logits, y) of each row alone, over the trainable
    parameters in order (autograd, one row at a time)."""
    params = [p for p in net.parameters() if p.requires_grad]
    rows = []
    for i in range(samples.n):
        x, y = samples.x[i:i + 1], samples.y[i:i + 1]
        gs = torch.autograd.grad(fn(net(x), y).sum(), params)
        rows.append(torch.cat([g.reshape(-1) for g in gs]))
    return torch.stack(rows)


def test_one_linear_layer_fitted_on_one_sample_is_the_exact_damped_inverse():
    """One sample, one position: F = vec(g a^T) vec(g a^T)^T = (a a^T) (x) (g g^T) is a
    Kronecker product, diagonal in Q_A (x) Q_S, so EK-FAC's (F + lambda I)^-1 is exact."""
    torch.manual_seed(0)
    net = Network(nn.Linear(4, 3).double(), torch.zeros(1, 4, dtype=torch.float64)).eval()
    fit_on, train, test = mlp_data(1, 1), mlp_data(7, 2), mlp_data(5, 3)
    fit_on = TensorSamples(fit_on.x[:, :4], fit_on.y)
    train, test = (TensorSamples(s.x[:, :4], s.y) for s in (train, test))
    ek = EKFAC(net, dtype=torch.float64)
    factors = ek.fit(fit_on, mean_cross_entropy, fisher="empirical")
    damping = 0.3
    ours = ek.scores(factors, test, train, CLASSIFICATION, damping=damping)

    # exact: G is (d_out, d_in + 1) = [W | b], the layout of parameters (weight, bias)
    def as_matrix(v):  # (n, p) in (weight, bias) order -> (n, 3 * 5) in [W | b] order
        return torch.cat([v[:, :12].reshape(-1, 3, 4), v[:, 12:].reshape(-1, 3, 1)], 2).flatten(1)

    v = as_matrix(per_sample_grads(net, fit_on, lambda z, y: mean_cross_entropy(z, y)))
    curvature = v.T @ v + damping * torch.eye(v.shape[1], dtype=torch.float64)
    g_test = as_matrix(per_sample_grads(net, test, margin))
    g_train = as_matrix(per_sample_grads(net, train, margin))
    exact = torch.linalg.solve(curvature, g_test.T).T @ g_train.T
    # float64 rounding: measured max |diff| / max |exact| 1e-15
    torch.testing.assert_close(ours, exact, rtol=1e-10, atol=1e-10 * float(exact.abs().max()))


class _Twice(nn.Module):
    """A conv layer (unfolded patches, bias), then one Linear applied twice (its two calls'
    terms must add up to each sample's gradient)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, stride=2, padding=1)
        self.shared = nn.Linear(12, 12)
        self.head = nn.Linear(12, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.conv(x)).flatten(1)
        return self.head(torch.tanh(self.shared(torch.tanh(self.shared(h)))))


def test_scores_times_a_large_damping_are_grad_dot():
    """(F + lambda I)^-1 -> I / lambda: lambda x scores -> the gradients' inner products,
    which checks each sample's per-layer G (conv patches, a layer called twice)."""
    torch.manual_seed(0)
    net = Network(_Twice().double(), torch.zeros(1, 2, 4, 4, dtype=torch.float64)).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(11, 2, 4, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (11,), generator=gen)
    train, test = TensorSamples(x[:8], y[:8]), TensorSamples(x[8:], y[8:])
    ek = EKFAC(net, dtype=torch.float64)
    assert ek.layers == ["module.conv.weight", "module.shared.weight", "module.head.weight"]
    factors = ek.fit(train, mean_cross_entropy, fisher="true", batch_size=3)
    damping = 1e9
    ours = damping * ek.scores(factors, test, train, damping=damping, batch_size=3)
    dot = per_sample_grads(net, test, margin) @ per_sample_grads(net, train, margin).T
    # the first-order term is ~|F| / lambda: measured max |diff| / max |dot| 9e-11
    torch.testing.assert_close(ours, dot, rtol=1e-6, atol=1e-6 * float(dot.abs().max()))


def test_factors_are_a_plain_dict_that_round_trips_through_torch_save(tmp_path):
    net = mlp()
    train, test = mlp_data(10, 1), mlp_data(4, 2)
    ek = EKFAC(net, dtype=torch.float64)
    factors = ek.fit(train, mean_cross_entropy)
    assert all(isinstance(v, torch.Tensor) for v in factors.values())
    name = "module.0.weight"
    assert factors[f"{name}::q_a"].shape == (7, 7)  # 6 inputs and the bias's 1
    assert factors[f"{name}::lambda"].shape == (10, 7)
    torch.save(factors, tmp_path / "f.pt")
    again = torch.load(tmp_path / "f.pt")
    torch.testing.assert_close(ek.scores(again, test, train), ek.scores(factors, test, train),
                               rtol=0, atol=0)
    # the true Fisher's labels are drawn from the seed: the same seed, the same factors
    torch.testing.assert_close(ek.fit(train, mean_cross_entropy)[f"{name}::lambda"],
                               factors[f"{name}::lambda"], rtol=0, atol=0)
    other = ek.fit(train, mean_cross_entropy, seed=1)[f"{name}::lambda"]
    assert not torch.equal(other, factors[f"{name}::lambda"])


@pytest.mark.parametrize("loss_fn,shift", [(mean_cross_entropy, 0),
                                           (next_token_cross_entropy, 1)])
def test_true_fisher_labels_sit_where_the_loss_reads_them(loss_fn, shift):
    """Labels drawn from logits[t] go where the loss scores logits[t]: y[t] for plain
    sequence targets, y[t + 1] for Hugging Face causal-LM labels; ignored stay ignored."""
    from raytda.core.ekfac import sampled_labels

    gen = torch.Generator().manual_seed(0)
    peak = torch.randint(0, 7, (3, 5), generator=gen)
    logits = 50.0 * nn.functional.one_hot(peak, 7).double()  # the draw is the peak
    y = torch.randint(0, 7, (3, 5), generator=gen)
    y[0, 2] = -100
    got = sampled_labels(loss_fn, logits, y, torch.Generator().manual_seed(1))
    assert got[0, 2] == -100
    keep = y != -100
    if shift == 0:
        assert torch.equal(got[keep], peak[keep])
    else:
        assert (got[:, 0] == -100).all()
        assert torch.equal(got[:, 1:][keep[:, 1:]], peak[:, :-1][keep[:, 1:]])


# ------------------------------------------------------------------ embeddings


class _Bag(nn.Module):
    """An untied embedding (the only trainable layer), mean-pooled over the sequence, and
    a frozen head: the embedding's weight is all EK-FAC attributes."""

    def __init__(self, vocab: int, d: int, classes: int = 3, padding_idx: int | None = 0
                 ) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d, padding_idx=padding_idx)
        self.head = nn.Linear(d, classes)
        self.head.requires_grad_(False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.emb(ids)).mean(1))


def bag(vocab: int, d: int) -> Network:
    torch.manual_seed(0)
    return Network(_Bag(vocab, d).double(), torch.zeros(1, 4, dtype=torch.long)).eval()


def token_rows(n: int, t: int, vocab: int, seed: int) -> TensorSamples:
    gen = torch.Generator().manual_seed(seed)
    return TensorSamples(torch.randint(0, vocab, (n, t), generator=gen),
                         torch.randint(0, 3, (n,), generator=gen))


def test_untied_embedding_is_factored_with_token_counts_for_a():
    """A one-hot A is diag(token counts) / positions; padding_idx reads a zero a_t; no
    vocab x vocab Q_A is stored; the factored layer is the embedding, nothing uncovered."""
    net = bag(9, 4)
    train = token_rows(12, 5, 9, 1)
    ek = EKFAC(net, dtype=torch.float64)
    assert ek.layers == ["module.emb.weight"] and ek.uncovered == []
    factors = ek.fit(train, mean_cross_entropy, fisher="empirical", batch_size=5)
    name = "module.emb.weight"
    assert f"{name}::q_a" not in factors
    counts = torch.bincount(train.x.flatten(), minlength=9).double()
    counts[0] = 0  # padding_idx
    torch.testing.assert_close(factors[f"{name}::eig_a"], counts / train.x.numel(),
                               rtol=0, atol=0)
    assert factors[f"{name}::q_s"].shape == (4, 4)
    assert factors[f"{name}::lambda"].shape == (4, 9)
    assert not factors[f"{name}::lambda"][:, 0].any()  # the padding row has no gradient


def test_embedding_of_width_one_on_single_tokens_is_the_exact_damped_fisher_inverse():
    """One token per row, width 1: a row's gradient lives in its token's entry alone, so
    the Fisher (empirical, summed per-sample loss / n) is diagonal, which is what EK-FAC
    models exactly: its damped inverse is the exact one."""
    net = bag(7, 1)
    fit_on, train, test = (token_rows(n, 1, 7, seed) for n, seed in ((20, 1), (8, 2), (4, 3)))
    ek = EKFAC(net, dtype=torch.float64)
    factors = ek.fit(fit_on, mean_cross_entropy, fisher="empirical", batch_size=6)
    damping = 0.05
    ours = ek.scores(factors, test, train, CLASSIFICATION, damping=damping, batch_size=3)
    v = per_sample_grads(net, fit_on, mean_cross_entropy)  # (n, 7): the weight's one column
    fisher = v.T @ v / fit_on.n
    exact = torch.linalg.solve(fisher + damping * torch.eye(7, dtype=torch.float64),
                               per_sample_grads(net, test, margin).T).T \
        @ per_sample_grads(net, train, margin).T
    # float64: measured max |diff| / max |exact| 0 (exactly equal); 1e-10 leaves room for BLAS
    torch.testing.assert_close(ours, exact, rtol=1e-10, atol=1e-10 * float(exact.abs().max()))


def test_embedding_scores_equal_ekfac_built_densely_from_one_hot_inputs():
    """Width 4, sequences of 5 with padding: EK-FAC by its definition, built densely from
    autograd's per-position output gradients g_t and explicit one-hot a_t (A eigendecomposed
    as a vocab x vocab matrix, its counts made distinct so that its basis is unique up to
    signs and the zero-count tokens, whose Lambda is 0 in any basis), equals the scores
    from the diagonal A and the scattered G."""
    vocab, d = 8, 4
    net = bag(vocab, d)
    gen = torch.Generator().manual_seed(5)
    # token v appears v + 1 times over the fit rows (distinct counts), shuffled into rows
    ids = torch.cat([torch.full((v + 1,), v) for v in range(vocab)])
    ids = ids[torch.randperm(len(ids), generator=gen)][:35].reshape(7, 5)
    fit_on = TensorSamples(ids, torch.randint(0, 3, (7,), generator=gen))
    train, test = token_rows(6, 5, vocab, 2), token_rows(3, 5, vocab, 3)
    ek = EKFAC(net, dtype=torch.float64)
    factors = ek.fit(fit_on, mean_cross_entropy, fisher="empirical", batch_size=3)
    damping = 0.01
    ours = ek.scores(factors, test, train, CLASSIFICATION, damping=damping, batch_size=4)

    module = net.module
    a_rows, g_rows, per_sample = [], [], []
    for i in range(fit_on.n):
        x, y = fit_on.x[i:i + 1], fit_on.y[i:i + 1]
        out = module.emb(x)
        logits = module.head(torch.tanh(out).mean(1))
        (g,) = torch.autograd.grad(mean_cross_entropy(logits, y), out)
        a = nn.functional.one_hot(x[0], vocab).double() * (x[0] != 0).double()[:, None]
        a_rows.append(a)
        g_rows.append(g[0])
        per_sample.append(g[0].T @ a)  # G_i (d x vocab)
    a_all, g_all = torch.cat(a_rows), torch.cat(g_rows)
    _, q_a = torch.linalg.eigh(a_all.T @ a_all / len(a_all))
    _, q_s = torch.linalg.eigh(g_all.T @ g_all / len(g_all))
    lam = torch.stack([(q_s.T @ gi @ q_a).square() for gi in per_sample]).mean(0)

    def precondition(gi):  # (F_ekfac + damping I)^-1 G, back in the weight's layout
        return q_s @ ((q_s.T @ gi @ q_a) / (lam + damping)) @ q_a.T

    def grads(samples):  # (n, d, vocab) per-sample gradients of the margin
        w = module.emb.weight
        return torch.stack([torch.autograd.grad(margin(net(samples.x[i:i + 1]),
                                                       samples.y[i:i + 1]).sum(), w)[0].T
                            for i in range(samples.n)])

    g_test, g_train = grads(test), grads(train)
    dense = torch.stack([precondition(gi) for gi in g_test]).flatten(1) @ g_train.flatten(1).T
    # float64 rounding: measured max |diff| / max |dense| 4.7e-16
    torch.testing.assert_close(ours, dense, rtol=1e-10, atol=1e-10 * float(dense.abs().max()))


def test_gpt2_factors_its_position_embedding_and_lists_the_tied_one():
    """GPT-2's wte is tied to lm_head (an embedding and a Linear): uncovered. Its wpe is
    an untied embedding read with position ids of shape (1, T): factored."""
    _, net = gpt2()
    ek = EKFAC(net, dtype=torch.float64)
    assert "module.transformer.wpe.weight" in ek.layers
    tied = [u for u in ek.uncovered if u["kind"] == "embedding+linear"]
    assert [u["params"] for u in tied] == [["module.transformer.wte.weight"]]
    factors = ek.fit(token_data(6, 8, 1), next_token_cross_entropy, fisher="empirical",
                     batch_size=4)
    lam = factors["module.transformer.wpe.weight::lambda"]
    assert lam.shape == (32, 16)
    # positions past the longest row (8 of 16) are never read: no curvature there
    assert lam[:, :8].abs().sum() > 0 and not lam[:, 8:].any()
