"""``cifar2-resnet9``: the paper's ResNet-9 on CIFAR-2 (cat vs dog), as a Task.

Paper scale (``full=True``; appendix B.1): CIFAR-10's cat and dog images, 5000 train / 500
test, ResNet-9 with dropout 0.1 after every convolution (:mod:`raytda.models.resnet9`,
4,825,154 parameters), 50 epochs. The paper states no optimizer for this model; dattri's
benchmark trainer for it (``benchmark/datasets/cifar/cifar_resnet9.py``) uses SGD lr 0.01,
momentum 0.9, and the paper's other CIFAR-2 model uses batch 64, so that is the recipe.

CPU scale (default): width 1/8 (channels 8, 16, 32, 64: about 76k parameters, the same
topology and the same 10 dropout sites), 1000 train / 100 test, 15 epochs. Why: a
full-width ResNet-9 epoch on 5000 images takes minutes on a 2-core CPU and LDS needs 50
retrainings, so the paper scale is for a GPU; the reduced net still trains to well above
chance in seconds per model.

Inputs: pixels / 255 normalized per channel with mean 0.5 and standard deviation 0.5, as
dattri's CIFAR benchmark data does (``transforms.Normalize((0.5,)*3, (0.5,)*3)``), so
inputs lie in [-1, 1]. Rows are flattened channel-major (3072 values); the model reshapes
them to (3, 32, 32).

f and Q: the classification margin and 1 - p_y (TRAK's choice for classifiers).
Per-sample gradients are taken in eval mode (BatchNorm on its running statistics), where
``torch.func.vmap`` applies; masks drive the dropout sites, one mask per site covering the
whole (C, H, W) activation of a sample.
"""

from __future__ import annotations

from typing import Any, ClassVar

from raytda.tasks.builtin import BuiltinTask, PaperSetting
from raytda.tasks.normalize import PAPER_NORMALIZE

#: dattri's CIFAR normalization (per channel mean and std)
MEAN, STD = PAPER_NORMALIZE["cifar2"]


class ResNet9Task(PaperSetting, BuiltinTask):
    """ResNet-9 (:mod:`raytda.models.resnet9`) on ``N_CLASSES`` classes of images of
    ``IMAGE_SHAPE``, sized by the ``width`` and ``dropout`` settings; subclasses give the
    data and the settings."""

    IMAGE_SHAPE: ClassVar[tuple[int, int, int]] = (3, 32, 32)
    N_CLASSES: ClassVar[int] = 2

    def build_model(self):
        from raytda.models.resnet9 import ResNet9

        return ResNet9(num_classes=self.N_CLASSES, dropout=self.settings["dropout"],
                       width=self.settings["width"], image_shape=self.IMAGE_SHAPE)


class CIFAR2ResNet9Task(ResNet9Task):
    """ResNet-9 on CIFAR-2; ``full=True`` for the paper's scale (see the module docstring)."""

    name = "cifar2-resnet9"
    version = "1"
    DATA_NAME = "cifar2"
    FULL: ClassVar[dict[str, Any]] = dict(
        n_train=5000, n_test=500, seed=0, width=1.0, dropout=0.1,
        optimizer="sgd", lr=0.01, momentum=0.9, batch_size=64, epochs=50)
    CPU: ClassVar[dict[str, Any]] = {**FULL, "n_train": 1000, "n_test": 100, "width": 0.125,
                                     "epochs": 15}

    def config(self) -> dict[str, Any]:
        return {**super().config(), "normalize": [MEAN, STD]}

    def load(self):
        from raytda.data.cifar2 import load_cifar2

        s = self.settings
        return load_cifar2(self.root(), s["n_train"], s["n_test"], s["seed"], normalize=(MEAN, STD)).splits()
