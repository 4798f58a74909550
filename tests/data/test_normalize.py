"""Per-dataset normalization (the paper's preprocessing): task setting, key, loaders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_loaders import CIFAR2_DIR, MNIST_DIR, fake_mnist

from raytda.data.mnist import load_mnist
from raytda.specs import SpecError
from raytda.tasks import get_task
from raytda.tasks.normalize import PAPER_NORMALIZE


def test_normalization_is_part_of_the_key():
    plain = get_task("digits-mlp")
    normed = get_task("digits-mlp", normalize=(0.5, 0.25))
    assert normed.declared_key != plain.declared_key
    assert normed.config()["normalize"] == [0.5, 0.25]
    # a JSON list means the same setting as the tuple (the CLI's --set gives lists)
    assert get_task("digits-mlp", normalize=[0.5, 0.25]).declared_key == normed.declared_key
    assert get_task("digits-mlp", normalize=(0.5, 0.5)).declared_key != normed.declared_key


@pytest.mark.parametrize("bad", [(0.5,), (0.1, 0.0), (0.1, -1.0)])
def test_bad_normalization_is_refused(bad):
    with pytest.raises(SpecError, match="normalize must be"):
        get_task("mnist-mlp", normalize=bad)


def test_builtin_image_tasks_use_dattris_constants():
    assert PAPER_NORMALIZE == {"mnist": (0.1307, 0.3081), "cifar2": (0.5, 0.5)}
    assert get_task("mnist-mlp").settings["normalize"] == (0.1307, 0.3081)
    assert get_task("cifar2-mlp").settings["normalize"] == (0.5, 0.5)
    assert get_task("digits-mlp").settings["normalize"] is None
    assert get_task("mnist-mlp", normalize=None).settings["normalize"] is None


def test_mnist_normalized_like_torchvision(tmp_path):
    arrays = fake_mnist(tmp_path)
    ds = load_mnist(tmp_path, n_train=12, n_test=5, normalize=(0.1307, 0.3081))
    # torchvision: ToTensor (uint8 / 255 in float32), then Normalize: (x - mean) / std.
    pixels = torch.from_numpy(arrays["x_train"].reshape(12, 784).astype(np.uint8)).float() / 255
    expected = (pixels - 0.1307) / 0.3081
    torch.testing.assert_close(ds.x_train, expected, rtol=1e-6, atol=1e-6)
    assert ds.x_train.dtype == torch.float32


@pytest.mark.data
@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"no shared MNIST at {MNIST_DIR}")
def test_real_mnist_normalized_background():
    (x, _), _ = get_task("mnist-mlp", data_dir=str(MNIST_DIR), n_train=200, n_test=20).load()
    background = (0.0 - 0.1307) / 0.3081
    assert float(x.min()) == pytest.approx(background, abs=1e-6)
    assert float(x.max()) == pytest.approx((1 - 0.1307) / 0.3081, abs=1e-5)
    assert float((x == x.min()).float().mean()) > 0.7  # mostly background


@pytest.mark.data
@pytest.mark.skipif(not (CIFAR2_DIR / "cifar2.npz").is_file(),
                    reason=f"no shared CIFAR-2 at {CIFAR2_DIR}")
def test_real_cifar2_normalized_range():
    (x, _), _ = get_task("cifar2-mlp", data_dir=str(CIFAR2_DIR), n_train=50, n_test=10).load()
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert float(x.min()) < -0.9 and float(x.max()) > 0.9
