"""--device resolution: auto follows torch.cuda.is_available(); cuda without CUDA and
unknown names fail with one SpecError line naming the valid choices."""

from __future__ import annotations

import pytest
import torch

from raytda.run.device import resolve_device
from raytda.specs import SpecError


@pytest.fixture
def cuda(monkeypatch):
    """Pretend this machine has ``n`` CUDA devices (0: none)."""
    def set_count(n: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
    return set_count


@pytest.mark.parametrize(("n", "want"), [(0, "cpu"), (1, "cuda")])
def test_auto_follows_cuda_availability(cuda, n, want):
    cuda(n)
    assert resolve_device("auto") == want
    assert resolve_device(" AUTO ") == want


def test_cpu_is_always_cpu(cuda):
    cuda(2)
    assert resolve_device("cpu") == "cpu"


def test_cuda_with_cuda(cuda):
    cuda(2)
    assert resolve_device("cuda") == "cuda"
    assert resolve_device("cuda:1") == "cuda:1"


@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_cuda_without_cuda_is_one_clear_line(cuda, name):
    cuda(0)
    with pytest.raises(SpecError) as err:
        resolve_device(name)
    msg = str(err.value)
    assert "\n" not in msg
    assert "CUDA is not available" in msg and "--device cpu" in msg and "auto" in msg


def test_cuda_index_out_of_range(cuda):
    cuda(1)
    with pytest.raises(SpecError, match=r"1 CUDA device"):
        resolve_device("cuda:1")


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:x", "mps", "", "cuda:-1"])
def test_unknown_names_list_the_choices(cuda, name):
    cuda(1)
    with pytest.raises(SpecError) as err:
        resolve_device(name)
    msg = str(err.value)
    assert "\n" not in msg
    for choice in ("auto", "cpu", "cuda", "cuda:N"):
        assert choice in msg


def test_on_cluster_trusts_the_scheduler_for_cuda(cuda):
    """A CPU-only head still asks the cluster for GPUs; bad names are still rejected."""
    cuda(0)
    assert resolve_device("cuda", on_cluster=True) == "cuda"
    assert resolve_device("cuda:0", on_cluster=True) == "cuda:0"
    assert resolve_device("auto", on_cluster=True) == "cpu"
    with pytest.raises(SpecError):
        resolve_device("gpu", on_cluster=True)
