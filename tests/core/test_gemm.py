import pytest
import torch

from raytda.core import gemm
from raytda.core.args import ComputeArgs
from raytda.core.projection import GaussianProjector

needs_openblas = pytest.mark.skipif(gemm._openblas() is None,
                                    reason="numpy is not built on OpenBLAS here")


@needs_openblas
def test_numpy_backend_computes_the_same_product_as_torch():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(37, 300, generator=gen), torch.randn(300, 65, generator=gen)
    ours = gemm.matmul(a, b, "numpy")
    ref = (a.double() @ b.double()).float()
    assert ours.dtype == torch.float32 and ours.shape == (37, 65)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-4)
    # A strided (column-sliced) left operand, as the streaming projector passes.
    wide = torch.randn(37, 600, generator=gen)
    torch.testing.assert_close(gemm.matmul(wide[:, 100:400], b, "numpy"),
                               wide[:, 100:400] @ b, rtol=1e-5, atol=1e-4)


@needs_openblas
def test_numpy_backend_does_not_alias_its_inputs():
    a, b = torch.ones(4, 3), torch.ones(3, 2)
    out = gemm.matmul(a, b, "numpy")
    out.zero_()
    assert a.sum() == 12 and b.sum() == 6


def test_non_float32_or_grad_tensors_go_to_torch():
    a = torch.randn(5, 4, dtype=torch.float64)
    b = torch.randn(4, 3, dtype=torch.float64)
    assert gemm.matmul(a, b, "numpy").dtype == torch.float64
    w = torch.randn(4, 3, requires_grad=True)
    assert gemm.matmul(torch.randn(5, 4), w, "numpy").requires_grad


def test_auto_resolves_to_a_concrete_backend_and_bad_names_fail():
    assert gemm.resolve("auto") in ("torch", "numpy")
    with pytest.raises(ValueError, match="unknown CPU GEMM backend 'mkl'"):
        gemm.resolve("mkl")
    with pytest.raises(ValueError, match="cpu_gemm"):
        ComputeArgs(cpu_gemm="mkl")
    with pytest.raises(ValueError, match="unknown CPU GEMM backend"):
        GaussianProjector(100, 8, seed=0, cpu_gemm="blas")


@needs_openblas
@pytest.mark.parametrize("budget_chunks", [1, 100])  # streaming and resident
def test_projection_is_backend_independent(budget_chunks):
    p, k = 9000, 16
    g = torch.randn(6, p, generator=torch.Generator().manual_seed(1))
    budget = budget_chunks * 4096 * k * 4
    by_backend = [GaussianProjector(p, k, seed=3, memory_bytes=budget, cpu_gemm=b).project(g)
                  for b in ("torch", "numpy")]
    # Values are ~sqrt(p)/4 in size; only float32 rounding of a 9000-term sum may differ.
    torch.testing.assert_close(by_backend[0], by_backend[1], rtol=1e-5, atol=2e-4)


def test_auto_is_a_fixed_rule_not_a_timing(monkeypatch):
    """The same machine must resolve 'auto' the same way on every run, whatever its load:
    the choice follows the CPU vendor and the BLAS numpy carries, nothing measured."""
    for vendor, expect in (("AuthenticAMD", "numpy"), ("GenuineIntel", "torch"), ("", "torch")):
        gemm._auto_choice.cache_clear()
        monkeypatch.setattr(gemm, "cpu_vendor", lambda v=vendor: v)
        want = expect if gemm._openblas() is not None else "torch"
        assert gemm.resolve("auto") == want
    gemm._auto_choice.cache_clear()
