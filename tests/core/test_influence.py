"""Influence functions: CG with Hessian-vector products against an explicit inverse Hessian."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian

from raytda.core.args import ComputeArgs
from raytda.core.grads import param_dict
from raytda.core.influence import conjugate_gradients, influence_block, make_hvp
from raytda.core.masks import MaskSpec, masks_for
from raytda.core.network import Network
from raytda.data import Dataset, TensorSamples
from raytda.models import build_model
from raytda.specs import ModelSpec

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
    model = Network(build_model(ModelSpec("mlp", 8, (6,), 3, 0.3)), x[:1]).eval()
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
                                   hessian_samples=None, args=ComputeArgs(grad_batch=9))
    H = explicit_hessian(model, data.x_train, data.y_train)
    damped = H + DAMPING * torch.eye(H.shape[0], dtype=torch.float64)
    g_tr = loop_grads(model, data.x_train, data.y_train)
    g_te = loop_grads(model, data.x_test, data.y_test)
    ref = g_te @ torch.linalg.solve(damped, g_tr.T)  # (m, n) = g(test)^T H^-1 g(train)
    assert scores.shape == (data.n_test, data.n_train)
    assert rel_err(scores, ref) < 1e-4
    assert info["damping"] == DAMPING
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
