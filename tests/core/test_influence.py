"""Influence functions: CG on Gauss-Newton and Hessian products against dense matrices."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian, jacrev

from raytda.core.args import ComputeArgs
from raytda.core.influence import conjugate_gradients, influence_block, make_gnvp, make_hvp
from raytda.core.masks import MaskSpec, masks_for
from raytda.core.network import Network
from raytda.core.outputs import IGNORE_INDEX
from raytda.data import Dataset, TensorSamples
from raytda.models import GPT, MLP


def param_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """All parameters by name (detached), in module order."""
    return {k: v.detach() for k, v in model.named_parameters()}

DAMPING = 1e-2


class SoftmaxRegression(nn.Module):
    """Multinomial logistic regression: mean cross-entropy is convex in its parameters."""

    mask_sizes: tuple[int, ...] = ()

    def __init__(self, d: int, c: int) -> None:
        super().__init__()
        self.linear = nn.Linear(d, c)

    def forward(self, x: torch.Tensor, masks=None) -> torch.Tensor:
        return self.linear(x)


@pytest.fixture(scope="module")
def convex_case() -> tuple[nn.Module, Dataset]:
    gen = torch.Generator().manual_seed(0)
    d, c, n, m = 4, 3, 40, 5
    centres = torch.randn(c, d, generator=gen)
    y = torch.randint(0, c, (n + m,), generator=gen)
    x = centres[y] + torch.randn(n + m, d, generator=gen)
    torch.manual_seed(0)
    model = SoftmaxRegression(d, c)
    with torch.no_grad():  # away from the origin, so that samples have distinct curvature
        model.linear.weight.copy_(torch.randn(c, d, generator=gen))
        model.linear.bias.copy_(torch.randn(c, generator=gen))
    return model.eval(), Dataset(x[:n], y[:n], x[n:], y[n:])


def explicit_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                     mask: MaskSpec | None = None) -> torch.Tensor:
    """Hessian of the mean cross-entropy over (x, y) w.r.t. the flat parameters, float64."""
    params = {k: v.double() for k, v in param_dict(model).items()}
    names = list(params)
    shapes = [params[k].shape for k in names]
    sizes = [params[k].numel() for k in names]
    masks, _ = masks_for(mask, getattr(model, "mask_sizes", ()), "train", torch.arange(len(x)))
    masks = None if masks is None else tuple(m.double() for m in masks)

    def loss(flat: torch.Tensor) -> torch.Tensor:
        p = {k: t.view(s) for k, t, s in zip(names, flat.split(sizes), shapes, strict=True)}
        logits = functional_call(model, p, (x.double(),), {"masks": masks})
        return nn.functional.cross_entropy(logits, y)

    return hessian(loss)(torch.cat([params[k].reshape(-1) for k in names]))


def loop_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample gradients of the margin log(p_y / (1 - p_y)), one autograd call each."""
    rows = []
    for i in range(x.shape[0]):
        logp = torch.log_softmax(model(x[i:i + 1])[0].double(), dim=0)
        f = logp[y[i]] - torch.logsumexp(torch.cat([logp[:y[i]], logp[y[i] + 1:]]), 0)
        g = torch.autograd.grad(f, list(model.parameters()))
        rows.append(torch.cat([t.reshape(-1) for t in g]).double())
    return torch.stack(rows)


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got.double() - ref).norm() / ref.norm())


def test_hvp_matches_explicit_hessian(convex_case):
    model, data = convex_case
    H = explicit_hessian(model, data.x_train, data.y_train)
    V = torch.randn(H.shape[0], 5, generator=torch.Generator().manual_seed(1))
    # batch and rhs_chunk that do not divide n or r: accumulation and chunking must be exact.
    hvp = make_hvp(model, data.train, None, batch=7, rhs_chunk=2)
    assert rel_err(hvp(V), H @ V.double()) < 1e-5


def test_hvp_of_masked_mlp_matches_explicit_hessian(toy_data):
    """The Hessian is of the member's own (masked) loss; per-sample masks keyed by index."""
    torch.manual_seed(0)
    x, y = toy_data.x_train[:30], toy_data.y_train[:30]
    model = Network(MLP(8, (6,), 3, 0.3), x[:1]).eval()
    V = torch.randn(sum(p.numel() for p in model.parameters()), 3,
                    generator=torch.Generator().manual_seed(2))
    for mask in (MaskSpec(seed=1, rate=0.3), MaskSpec(seed=1, rate=0.3, mode="per-sample")):
        H = explicit_hessian(model, x, y, mask)
        hvp = make_hvp(model, TensorSamples(x, y), mask, batch=8)
        assert rel_err(hvp(V), H @ V.double()) < 1e-5
    unmasked = explicit_hessian(model, x, y, None)
    assert rel_err(unmasked @ V.double(), H @ V.double()) > 1e-2  # masks matter


def test_conjugate_gradients_solves_damped_system():
    gen = torch.Generator().manual_seed(3)
    A = torch.randn(12, 12, generator=gen, dtype=torch.float64)
    A = A @ A.T  # symmetric PSD
    B = torch.randn(12, 4, generator=gen, dtype=torch.float64)
    X, info = conjugate_gradients(lambda v: A @ v, B, damping=0.5, max_iter=100, tol=1e-10)
    ref = torch.linalg.solve(A + 0.5 * torch.eye(12, dtype=torch.float64), B)
    assert rel_err(X, ref) < 1e-8
    assert info["cg_max_rel_residual"] <= 1e-10
    assert 1 <= info["cg_iterations"] <= 100


def test_conjugate_gradients_reports_nonconvergence():
    A = torch.diag(torch.logspace(0, 6, 30, dtype=torch.float64))
    B = torch.ones(30, 2, dtype=torch.float64)
    _, info = conjugate_gradients(lambda v: A @ v, B, damping=0.0, max_iter=3, tol=1e-12)
    assert info["cg_iterations"] == 3
    assert info["cg_max_rel_residual"] > 1e-12


def test_conjugate_gradients_columns_converge_independently():
    """A zero right-hand side next to a hard one must stay exactly zero (no NaN leaks)."""
    A = torch.diag(torch.arange(1.0, 9.0, dtype=torch.float64))
    B = torch.zeros(8, 2, dtype=torch.float64)
    B[:, 1] = 1.0
    X, _ = conjugate_gradients(lambda v: A @ v, B, damping=0.0, max_iter=50, tol=1e-12)
    assert torch.equal(X[:, 0], torch.zeros(8, dtype=torch.float64))
    torch.testing.assert_close(X[:, 1], 1.0 / torch.arange(1.0, 9.0, dtype=torch.float64))


def test_influence_scores_match_explicit_inverse_hessian(convex_case):
    model, data = convex_case
    scores, info = influence_block(model, data, None, DAMPING, max_iter=200, tol=1e-7,
                                   hessian_samples=None, args=ComputeArgs(grad_batch=9),
                                   curvature="hessian")
    H = explicit_hessian(model, data.x_train, data.y_train)
    damped = H + DAMPING * torch.eye(H.shape[0], dtype=torch.float64)
    g_tr = loop_grads(model, data.x_train, data.y_train)
    g_te = loop_grads(model, data.x_test, data.y_test)
    ref = g_te @ torch.linalg.solve(damped, g_tr.T)  # (m, n) = g(test)^T H^-1 g(train)
    assert scores.shape == (data.n_test, data.n_train)
    assert rel_err(scores, ref) < 1e-4
    assert info["damping"] == DAMPING and info["cg_converged"]
    assert info["cg_negative_curvature_columns"] == 0  # convex: CG must converge
    # The damped Hessian really matters: plain gradient dot products are far from IF.
    assert rel_err(g_te @ g_tr.T, ref) > 0.1


def test_influence_on_hessian_subset_uses_fewer_samples(convex_case):
    model, data = convex_case
    args = ComputeArgs()
    full, _ = influence_block(model, data, None, DAMPING, 200, 1e-7, None, args)
    same, _ = influence_block(model, data, None, DAMPING, 200, 1e-7, data.n_train, args)
    sub, _ = influence_block(model, data, None, DAMPING, 200, 1e-7, 10, args)
    torch.testing.assert_close(same, full)  # hessian_samples >= n means the whole set
    assert not torch.allclose(sub, full, rtol=1e-2)
    assert torch.isfinite(sub).all()


def test_conjugate_gradients_stops_a_column_at_negative_curvature():
    """Indefinite A (eigenvalues 4, 2, 1, 3 and -0.5): a column whose Krylov space reaches
    the negative eigendirection stops and keeps its last iterate (here the first step,
    alpha b); one on the positive part is solved exactly; one whose very first direction
    has negative curvature keeps b itself."""
    eig = torch.tensor([4.0, 2.0, 1.0, -0.5, 3.0], dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=torch.Generator().manual_seed(0),
                                       dtype=torch.float64))
    A = q @ torch.diag(eig) @ q.T
    B = torch.stack([2 * q[:, 0] + q[:, 3], q[:, 1] + q[:, 2], q[:, 0] + 3 * q[:, 3]], 1)
    X, info = conjugate_gradients(lambda v: A @ v, B, damping=0.0, max_iter=20, tol=1e-12)
    assert info["cg_negative_curvature_columns"] == 2
    b0 = B[:, 0]
    torch.testing.assert_close(X[:, 0], (b0 @ b0) / (b0 @ A @ b0) * b0)
    torch.testing.assert_close(X[:, 1], torch.linalg.solve(A, B[:, 1]))
    assert torch.equal(X[:, 2], B[:, 2])  # b^T A b = 4 - 4.5 < 0 on the first step


# --------------------------------------------------------------------------- Gauss-Newton


def flat_logits(model: nn.Module, x: torch.Tensor, mask: MaskSpec | None, rows: torch.Tensor):
    """(logits as a function of the flat float64 parameters, the flat parameters)."""
    model = copy.deepcopy(model).double()  # the caller's model stays as it is
    params = param_dict(model)
    names = list(params)
    shapes = [params[k].shape for k in names]
    sizes = [params[k].numel() for k in names]
    masks, _ = masks_for(mask, getattr(model, "mask_sizes", ()), "train", rows)
    masks = None if masks is None else tuple(m.double() for m in masks)

    def logits(flat: torch.Tensor) -> torch.Tensor:
        p = {k: t.view(s) for k, t, s in zip(names, flat.split(sizes), shapes, strict=True)}
        return functional_call(model, p, (x,), {"masks": masks})

    return logits, torch.cat([params[k].reshape(-1) for k in names])


def explicit_ggn(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 mask: MaskSpec | None = None, rows: torch.Tensor | None = None) -> torch.Tensor:
    """The Gauss-Newton matrix of the mean cross-entropy over every prediction whose
    target is not ignored, formed densely in float64: mean over those predictions of
    J^T (diag(p) - p p^T) J, J the Jacobian of one prediction's logits (classification
    (B, C) or sequence (B, T, V) logits)."""
    rows = torch.arange(len(x)) if rows is None else rows
    logits, theta = flat_logits(model, x, mask, rows)
    J = jacrev(logits)(theta)  # (..., C, P)
    z = logits(theta).detach()
    C, P = z.shape[-1], theta.numel()
    J, p = J.reshape(-1, C, P), torch.softmax(z, -1).reshape(-1, C)
    H = torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)
    kept = (y.reshape(-1) != IGNORE_INDEX).double()
    return torch.einsum("n,ncp,ncd,ndq->pq", kept, J, H, J) / kept.sum()


def test_gnvp_of_masked_mlp_matches_explicit_gauss_newton(toy_data):
    """Non-convex, with per-sample masks keyed by train row (here rows 5.. of the split)."""
    torch.manual_seed(0)
    x, y = toy_data.x_train[5:35], toy_data.y_train[5:35]
    model = Network(MLP(8, (6,), 3, 0.3), x[:1]).eval()
    V = torch.randn(sum(p.numel() for p in model.parameters()), 3,
                    generator=torch.Generator().manual_seed(2))
    rows = torch.arange(5, 35)
    for mask in (None, MaskSpec(seed=1, rate=0.3, mode="per-sample")):
        G = explicit_ggn(model, x.double(), y, mask, rows)
        gnvp = make_gnvp(model, TensorSamples(x, y), mask, batch=8, rhs_chunk=2,
                         rows=rows.numpy())
        # float32 products against a float64 dense matrix: measured 6e-8 to 1.1e-7 over
        # both cases and seeds 0-4; 1e-5 leaves room for other BLAS orderings.
        assert rel_err(gnvp(V), G @ V.double()) < 1e-5
    eig = torch.linalg.eigvalsh(G)
    assert eig.min() > -1e-10 * eig.max()  # PSD, unlike the Hessian (next test)
    assert torch.linalg.eigvalsh(explicit_hessian(model, x, y, mask)).min() < 0


class TinySequenceModel(nn.Module):
    """Embedding -> tanh -> per-position vocabulary logits: (B, T) tokens -> (B, T, V)."""

    mask_sizes: tuple[int, ...] = ()

    def __init__(self, vocab: int, width: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.mix = nn.Linear(width, width)
        self.out = nn.Linear(width, vocab)

    def forward(self, x: torch.Tensor, masks=None) -> torch.Tensor:
        h = self.embed(x)
        h = torch.tanh(self.mix(h + h.cumsum(1)))  # each position sees its prefix
        return self.out(h)


def test_gnvp_on_sequence_logits_matches_explicit_gauss_newton():
    gen = torch.Generator().manual_seed(4)
    x = torch.randint(0, 5, (6, 4), generator=gen)
    y = torch.randint(0, 5, (6, 4), generator=gen)
    torch.manual_seed(0)
    model = TinySequenceModel(5, 3).eval()
    G = explicit_ggn(model, x, y)
    V = torch.randn(G.shape[0], 4, generator=gen)
    gnvp = make_gnvp(model, TensorSamples(x, y), None, batch=4)
    # measured 7e-8 to 1e-7 over seeds 0-4 (float32 products); margin as in the MLP test
    assert rel_err(gnvp(V), G @ V.double()) < 1e-5


def test_gnvp_of_a_masked_gpt_with_ignored_targets_matches_explicit_gauss_newton():
    """The built-in language model: (B, T, V) logits through attention, a fixed dropout
    mask, and targets a Task leaves out (IGNORE_INDEX) out of the curvature too."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 5, (6, 4), generator=gen)
    y = torch.randint(0, 5, (6, 4), generator=gen)
    y[0, :2] = IGNORE_INDEX
    torch.manual_seed(0)
    gpt = GPT(vocab=5, n_layer=1, n_head=1, d_model=4, block_size=4, dropout=0.2)
    model = Network(gpt, x[:1]).eval()
    mask = MaskSpec(seed=1, rate=0.2)
    G = explicit_ggn(model, x, y, mask)
    V = torch.randn(G.shape[0], 3, generator=gen)
    # one batch: the loss's mean over kept targets is then the whole set's (batches are
    # weighted by rows, as for the Hessian); measured 1e-7 to 3.1e-7 over seeds 0-2
    gnvp = make_gnvp(model, TensorSamples(x, y), mask, batch=8)
    assert rel_err(gnvp(V), G @ V.double()) < 1e-5


def test_gnvp_uses_the_hessian_of_any_loss_in_the_logits(toy_data):
    """A Task's own loss (here squared error to one-hot targets, H_z = 2 I / C per sample)."""
    torch.manual_seed(0)
    x, y = toy_data.x_train[:20], toy_data.y_train[:20]
    model = Network(MLP(8, (6,), 3, 0.0), x[:1]).eval()

    def squared(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((logits - nn.functional.one_hot(y, 3).to(logits.dtype)) ** 2).mean()

    logits, theta = flat_logits(model, x.double(), None, torch.arange(20))
    J = jacrev(logits)(theta)  # (B, C, P)
    G = 2.0 / 3.0 * torch.einsum("ncp,ncq->pq", J, J) / 20
    V = torch.randn(G.shape[0], 2, generator=torch.Generator().manual_seed(5))
    gnvp = make_gnvp(model, TensorSamples(x, y), None, loss_fn=squared)
    assert rel_err(gnvp(V), G @ V.double()) < 1e-5  # measured 6e-8 to 8e-8, seeds 0-2


def double_mlp_case(toy_data) -> tuple[nn.Module, Dataset]:
    """A trained-like small MLP (296 parameters) in float64, 40 train / 8 test rows."""
    torch.manual_seed(0)
    d = toy_data
    model = Network(MLP(8, (16, 8), 3, 0.0),
                    d.x_train[:1]).double().eval()
    return model, Dataset(d.x_train[:40].double(), d.y_train[:40], d.x_test[:8].double(),
                          d.y_test[:8])


def test_ggn_influence_matches_a_dense_solve(toy_data):
    model, data = double_mlp_case(toy_data)
    scores, info = influence_block(model, data, None, DAMPING, max_iter=1000, tol=1e-10,
                                   hessian_samples=None, args=ComputeArgs(grad_batch=9))
    G = explicit_ggn(model, data.x_train, data.y_train)
    g_tr = loop_grads(model, data.x_train, data.y_train)
    g_te = loop_grads(model, data.x_test, data.y_test)
    ref = g_te @ torch.linalg.solve(G + DAMPING * torch.eye(G.shape[0], dtype=torch.float64),
                                    g_tr.T)
    assert info["curvature"] == "ggn" and info["cg_converged"]
    assert info["cg_negative_curvature_columns"] == 0
    # float64 CG to 1e-10: measured 2.4e-8 to 2.8e-8 over seeds 0-2
    assert rel_err(scores, ref) < 1e-4
    # plain gradient dot products are far from it (measured 0.84 to 0.86)
    assert rel_err(g_te @ g_tr.T, ref) > 0.1
    # The exact Hessian of the same network is indefinite: every column meets negative
    # curvature (measured within 3 iterations, seeds 0-2) and the solve is flagged.
    _, hess = influence_block(model, data, None, DAMPING, max_iter=1000, tol=1e-10,
                              hessian_samples=None, args=ComputeArgs(grad_batch=9),
                              curvature="hessian")
    assert hess["cg_negative_curvature_columns"] == data.n_test and not hess["cg_converged"]


def test_ggn_equals_the_hessian_for_a_linear_model(convex_case):
    """Logits linear in the parameters: the Gauss-Newton matrix is the Hessian itself."""
    model, data = convex_case
    args = ComputeArgs()
    ggn, _ = influence_block(model, data, None, DAMPING, 200, 1e-7, None, args)
    hess, _ = influence_block(model, data, None, DAMPING, 200, 1e-7, None, args,
                              curvature="hessian")
    # measured exactly 0 over seeds 0-2 (the same float32 operations); 1e-6 allows a
    # different association order of the two products, which would be as correct
    assert rel_err(ggn, hess.double()) < 1e-6


def test_curvature_is_taken_over_the_members_training_rows_only(convex_case):
    """Changing a train row outside the member's rows changes only that row's own scores
    (its gradient), never the others' (the curvature); a row inside changes them all."""
    model, data = convex_case
    rows = np.arange(0, data.n_train, 2)
    args = ComputeArgs()

    def scores(x_train: torch.Tensor) -> torch.Tensor:
        changed = Dataset(x_train, data.y_train, data.x_test, data.y_test)
        out, info = influence_block(model, changed, None, DAMPING, 200, 1e-7, None, args,
                                    train_rows=rows)
        assert info["curvature_rows"] == len(rows)
        return out

    base = scores(data.x_train)
    outside, inside = data.x_train.clone(), data.x_train.clone()
    outside[1] += 5.0
    inside[2] += 5.0
    others = np.setdiff1d(np.arange(data.n_train), [1, 2])
    torch.testing.assert_close(scores(outside)[:, others], base[:, others], rtol=0, atol=0)
    assert not torch.allclose(scores(inside)[:, others], base[:, others], rtol=1e-3)
    capped, info = influence_block(model, data, None, DAMPING, 200, 1e-7, 5, args,
                                   train_rows=rows)
    assert info["curvature_rows"] == 5 and torch.isfinite(capped).all()
