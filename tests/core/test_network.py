"""Network: any module's nn.Dropout modules as explicit dropout sites."""

from __future__ import annotations

import torch
from torch import nn

from raytda.core.masks import MaskSpec, fixed_masks, sample_masks
from raytda.core.network import Network


class Reused(nn.Module):
    """One nn.Dropout applied twice (two sites), one with p=0 (no site), and a conv part."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 2, 3, padding=1)
        self.fc = nn.Linear(8, 8)
        self.drop = nn.Dropout(0.5)
        self.off = nn.Dropout(0.0)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(self.conv(x.unsqueeze(1)))  # (B, 2, 4): a 2-D site per sample
        h = self.off(self.fc(h.flatten(1)))
        return self.head(self.drop(torch.relu(h)))


def test_sites_are_calls_of_dropout_modules_in_order():
    net = Network(Reused(), torch.zeros(1, 4))
    assert [(s.name, s.call, s.shape) for s in net.sites] == [("drop", 0, (2, 4)),
                                                               ("drop", 1, (8,))]
    assert net.mask_rates == (0.5, 0.5)


def test_masks_reproduce_nn_dropout_with_that_draw():
    torch.manual_seed(0)
    module = Reused().eval()
    net = Network(module, torch.zeros(1, 4))
    x = torch.randn(5, 4)
    masks = fixed_masks(MaskSpec(3, net.mask_rates), net.mask_sizes)
    m0, m1 = masks
    h = module.conv(x.unsqueeze(1)) * m0 / 0.5
    h = module.fc(h.flatten(1))
    expected = module.head(torch.relu(h) * m1 / 0.5)
    torch.testing.assert_close(net(x, masks=masks), expected)
    torch.testing.assert_close(net(x), module(x))  # no masks: the plain model (eval)


def test_per_sample_masks_broadcast_per_row():
    net = Network(Reused().eval(), torch.zeros(1, 4))
    x = torch.randn(3, 4)
    spec = MaskSpec(5, net.mask_rates, "per-sample")
    batch = sample_masks(spec, net.mask_sizes, "train", torch.arange(3))
    together = net(x, masks=batch)
    for i in range(3):
        alone = net(x[i:i + 1], masks=tuple(m[i:i + 1] for m in batch))
        torch.testing.assert_close(together[i:i + 1], alone)


def test_mask_dims_share_a_mask_across_leading_positions():
    class Seq(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.drop = nn.Dropout(0.5)

        def forward(self, x):
            return self.drop(x)

    net = Network(Seq().eval(), torch.zeros(1, 7, 4), mask_dims=1)
    assert net.mask_sizes == ((4,),)
    (m,) = fixed_masks(MaskSpec(1, 0.5), net.mask_sizes)
    out = net(torch.ones(2, 7, 4), masks=(m,))
    assert torch.equal(out, (m / 0.5).expand(2, 7, 4))
