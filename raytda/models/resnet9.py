"""ResNet-9 for 32x32 images (the paper's CIFAR-2 model), with dropout after every conv block.

The layout is the one dattri's benchmark trains for ``cifar2_resnet9`` (and whose size the
paper quotes, 4.83M parameters at 2 classes), which differs from the DAWNBench/Myrtle
"ResNet-9" (that one has two-conv residual branches without projections and ~6.6M
parameters):

    prep    conv3x3(3 -> 64) - BN - ReLU - Dropout                        32x32
    layer1  ResidualBlock(64 -> 128, stride 1)                            32x32
    layer2  ResidualBlock(128 -> 256, stride 2)                           16x16
    layer3  ResidualBlock(256 -> 512, stride 2)                            8x8
    global average pool -> Linear(512 -> num_classes)

Each ``ResidualBlock`` is two conv3x3-BN-ReLU-Dropout units on the main branch and a
conv1x1-BN-Dropout projection on the shortcut (all three blocks change the channel count,
so every shortcut is a projection); the two branches are summed and passed through a ReLU.
Convolutions have no bias (BatchNorm follows each one). That gives ``1 + 3 * 3 = 10``
dropout sites, each its own ``nn.Dropout`` instance, so a caller can find, count and
drive them one by one.

``width`` scales every channel count (64, 128, 256, 512), so ``width=1/16`` is a CPU-sized
network with the same topology. ``image_shape`` takes other images than CIFAR's (MNIST's
(1, 28, 28) for appendix J's ResNet on MNIST): the global average pool makes the head
independent of the spatial size (28 -> 14 -> 7 through the two stride-2 blocks).

Per-sample gradients: in eval mode BatchNorm uses its running statistics, so every sample
is processed independently and ``torch.func.vmap(grad(...))`` over
``functional_call(model, params, (x[None],))`` gives each sample's own gradient. In train
mode BatchNorm mixes the batch and updates its buffers in place, which vmap cannot do
per sample: take per-sample gradients in eval mode.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

#: channel counts of the prep layer and the three residual blocks at ``width=1``
BASE_CHANNELS = (64, 128, 256, 512)
#: CIFAR images: channels, height, width (a flattened input has 3 * 32 * 32 = 3072 features)
IMAGE_SHAPE = (3, 32, 32)


class ConvBlock(nn.Sequential):
    """conv3x3 (no bias) - BatchNorm - ReLU - Dropout."""

    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
            nn.Dropout(dropout),
        )


class ResidualBlock(nn.Module):
    """Two ConvBlocks on the main branch, a conv1x1-BN-Dropout projection on the shortcut.

    The sum of the branches goes through a final ReLU. The second ConvBlock already ends in
    a ReLU before the sum (as in dattri's model, whose forward we match so that weights
    and results are comparable).
    """

    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.conv1 = ConvBlock(c_in, c_out, stride, dropout)
        self.conv2 = ConvBlock(c_out, c_out, 1, dropout)
        self.shortcut = nn.Sequential(
            nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(c_out),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, c_in, H, W) -> (batch, c_out, H / stride, W / stride)."""
        return F.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class ResNet9(nn.Module):
    """ResNet-9 with a dropout module after every convolution block.

    Args:
        num_classes: width of the logit output.
        dropout: rate of every dropout site.
        width: multiplier on all channel counts (each rounded, at least 1).
        image_shape: (channels, height, width) of an input image; flattened rows are
            reshaped to it channel-major.
    """

    def __init__(self, num_classes: int = 2, dropout: float = 0.1, width: float = 1.0,
                 image_shape: tuple[int, int, int] = IMAGE_SHAPE) -> None:
        super().__init__()
        c0, c1, c2, c3 = (max(1, round(c * width)) for c in BASE_CHANNELS)
        self.rate = dropout
        self.image_shape = tuple(image_shape)
        self.prep = ConvBlock(self.image_shape[0], c0, 1, dropout)
        self.layer1 = ResidualBlock(c0, c1, 1, dropout)
        self.layer2 = ResidualBlock(c1, c2, 2, dropout)
        self.layer3 = ResidualBlock(c2, c3, 2, dropout)
        self.linear = nn.Linear(c3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (batch, num_classes) from images (batch, *image_shape) or flattened rows
        (batch, C * H * W); shapes below for CIFAR's 32x32."""
        if x.dim() == 2:
            # flattened rows, channel-major as numpy's reshape of (C, H, W) lays them out
            x = x.reshape(x.shape[0], *self.image_shape)
        h = self.prep(x)                     # (b, c0, 32, 32)
        h = self.layer1(h)                   # (b, c1, 32, 32)
        h = self.layer2(h)                   # (b, c2, 16, 16)
        h = self.layer3(h)                   # (b, c3, 8, 8)
        h = h.mean(dim=(2, 3))               # global average pool -> (b, c3)
        return self.linear(h)


def n_params(model: nn.Module) -> int:
    """Total number of parameters (BatchNorm running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters())
