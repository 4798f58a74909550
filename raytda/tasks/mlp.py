"""The MLP classifiers: ``toy-mlp``, ``digits-mlp``, ``mnist-mlp`` and ``cifar2-mlp``.

Each is the paper's MLP (:class:`raytda.models.mlp.MLP`: Linear-ReLU-Dropout per hidden
layer, then a linear head) on one data set, trained with SGD (momentum 0.9), keeping four
evenly spaced checkpoints besides the last. f and Q are the classification margin and
1 - p_y (the Task defaults). Dropout 0.1, as in every paper setting.

- ``mnist-mlp`` and ``cifar2-mlp`` are the paper's appendix B settings at the paper's scale
  (784-128-64-10 for 100 epochs, 3072-120-84-2 for 50; 5000 train / 500 test), which
  runs on a CPU, so ``FULL = CPU``. Their inputs are normalized as dattri 0.3.0's
  benchmark does (:data:`~raytda.tasks.normalize.PAPER_NORMALIZE`); ``normalize=None``
  keeps pixels in [0, 1].
- ``digits-mlp`` (scikit-learn's bundled 8x8 digits, no files) and ``toy-mlp`` (Gaussian
  blobs, trains in milliseconds, for tests) have no paper counterpart: one scale each.
"""

from __future__ import annotations

from typing import Any, ClassVar

from raytda.tasks.builtin import BuiltinTask, PaperSetting
from raytda.tasks.normalize import PAPER_NORMALIZE

#: the paper's recipe for its MLPs (appendix B)
SGD: dict[str, Any] = dict(optimizer="sgd", lr=0.01, momentum=0.9, batch_size=64)


class MLPTask(BuiltinTask):
    """An MLP classifier on ``IN_DIM`` features and ``N_CLASSES`` classes; subclasses give
    the data (``load``) and the settings."""

    version = "3"  # issue 17 moved the built-ins from Setting specs to task classes
    IN_DIM: ClassVar[int] = 0
    N_CLASSES: ClassVar[int] = 0

    def build_model(self):
        from raytda.models.mlp import MLP

        s = self.settings
        return MLP(self.IN_DIM, tuple(s["hidden"]), self.N_CLASSES, s["dropout"])


class ToyMLPTask(MLPTask):
    """MLP 8-16-16-3 on Gaussian blobs, no files; trains in milliseconds, for tests.

    Data: :func:`raytda.data.synthetic.load_synthetic`."""

    name = "toy-mlp"
    IN_DIM, N_CLASSES = 8, 3
    CPU: ClassVar[dict[str, Any]] = dict(
        n_train=60, n_test=12, seed=0, hidden=(16, 16), dropout=0.1,
        **{**SGD, "lr": 0.05, "batch_size": 16}, epochs=20)
    FULL = CPU  # no paper counterpart: one scale

    def load(self):
        from raytda.data.synthetic import load_synthetic

        s = self.settings
        return load_synthetic(s["n_train"], s["n_test"], s["seed"]).splits()


class DigitsMLPTask(MLPTask):
    """MLP 64-128-64-10 on scikit-learn's bundled 8x8 digits, no files; the CLI's default.

    Pixels in [0, 1] (``normalize=None``)."""

    name = "digits-mlp"
    IN_DIM, N_CLASSES = 64, 10
    CPU: ClassVar[dict[str, Any]] = dict(
        n_train=1000, n_test=200, seed=0, normalize=None, hidden=(128, 64), dropout=0.1,
        **SGD, epochs=30)
    FULL = CPU  # no paper counterpart: one scale

    def load(self):
        from raytda.data.digits import load_digits

        s = self.settings
        return load_digits(s["n_train"], s["n_test"], s["seed"], s["normalize"]).splits()


class MNISTMLPTask(PaperSetting, MLPTask):
    """MLP 784-128-64-10 on MNIST, the paper's setting and scale (appendix B).

    Reads the four MNIST IDX files."""

    name = "mnist-mlp"
    DATA_NAME = "mnist"
    IN_DIM, N_CLASSES = 784, 10
    CPU: ClassVar[dict[str, Any]] = dict(
        n_train=5000, n_test=500, seed=0, normalize=PAPER_NORMALIZE["mnist"],
        hidden=(128, 64), dropout=0.1, **SGD, epochs=100)
    FULL = CPU  # the paper's scale runs on a CPU

    def load(self):
        from raytda.data.mnist import load_mnist

        s = self.settings
        return load_mnist(self.root(), s["n_train"], s["n_test"], s["seed"], s["normalize"]).splits()


class CIFAR2MLPTask(PaperSetting, MLPTask):
    """MLP 3072-120-84-2 on CIFAR-2 (cat vs dog), the paper's setting (appendix B).

    Reads ``cifar2.npz``."""

    name = "cifar2-mlp"
    DATA_NAME = "cifar2"
    IN_DIM, N_CLASSES = 3072, 2
    CPU: ClassVar[dict[str, Any]] = dict(
        n_train=5000, n_test=500, seed=0, normalize=PAPER_NORMALIZE["cifar2"],
        hidden=(120, 84), dropout=0.1, **SGD, epochs=50)
    FULL = CPU  # the paper's scale runs on a CPU

    def load(self):
        from raytda.data.cifar2 import load_cifar2

        s = self.settings
        return load_cifar2(self.root(), s["n_train"], s["n_test"], s["seed"], s["normalize"]).splits()
