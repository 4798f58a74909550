"""ResNet-9: size at paper scale, input shapes, dropout sites, per-sample gradients under vmap."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from raytda.models.resnet9 import ResNet9, n_params


def test_full_size_parameter_count() -> None:
    """The paper's CIFAR-2 ResNet-9 has 4.83M parameters."""
    with torch.device("meta"):
        model = ResNet9(num_classes=2)
    count = n_params(model)
    print(f"ResNet-9 (2 classes) parameters: {count:,}")
    assert round(count / 1e6, 2) == 4.83
    # by hand: prep conv + BN, then per block conv3x3 x2 + conv1x1 shortcut + 3 BNs, then head
    conv = 3 * 64 * 9
    for c_in, c_out in ((64, 128), (128, 256), (256, 512)):
        conv += c_in * c_out * 9 + c_out * c_out * 9 + c_in * c_out
    bn = 2 * 64 + 3 * 2 * (128 + 256 + 512)
    assert count == conv + bn + 512 * 2 + 2


def test_dropout_sites_are_separate_modules() -> None:
    model = ResNet9(width=1 / 16, dropout=0.3)
    sites = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert len(sites) == 10                      # prep + 3 per residual block
    assert len({id(s) for s in sites}) == len(sites)
    assert all(s.p == 0.3 for s in sites)


def test_image_and_flat_inputs_agree() -> None:
    torch.manual_seed(0)
    model = ResNet9(num_classes=3, width=1 / 16).eval()
    x = torch.randn(4, 3, 32, 32)
    out = model(x)
    assert out.shape == (4, 3)
    torch.testing.assert_close(model(x.reshape(4, 3072)), out)


def test_dropout_active_only_in_train_mode() -> None:
    torch.manual_seed(0)
    model = ResNet9(width=1 / 16, dropout=0.5)
    x = torch.randn(2, 3072)
    model.eval()
    torch.testing.assert_close(model(x), model(x))
    model.train()
    assert not torch.allclose(model(x), model(x))


@pytest.mark.parametrize("flat", [False, True])
def test_vmap_per_sample_gradients_match_autograd(flat: bool) -> None:
    """vmap(grad) over functional_call equals one ordinary backward per sample (eval mode)."""
    torch.manual_seed(0)
    model = ResNet9(width=1 / 16).double()
    # non-trivial BatchNorm running statistics, then eval mode for per-sample gradients
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 3, 32, 32, dtype=torch.float64))
    model.eval()
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    if flat:
        x = x.reshape(3, -1)
    y = torch.tensor([0, 1, 1])
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, p, (xi.unsqueeze(0),))
        return nn.functional.cross_entropy(logits, yi.unsqueeze(0))

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    for i in range(3):
        model.zero_grad()
        nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        for name, p in model.named_parameters():
            torch.testing.assert_close(per_sample[name][i], p.grad, rtol=1e-9, atol=1e-11)
