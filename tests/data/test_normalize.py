"""Per-dataset normalization (the paper's preprocessing): spec field, key, loaders, settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_loaders import CIFAR2_DIR, MNIST_DIR, fake_mnist

from raytda.data.sources import load_data
from raytda.settings import get_setting
from raytda.specs import PAPER_NORMALIZE, DataSpec, SpecError


def test_unset_normalization_is_left_out_of_the_key():
    plain = DataSpec("digits", n_train=100, n_test=20)
    assert "normalize" not in plain.to_dict()
    normed = plain.replace(normalize=(0.5, 0.25))
    assert normed.key != plain.key
    assert normed.to_dict()["normalize"] == [0.5, 0.25]
    assert DataSpec.from_dict(normed.to_dict()) == normed  # JSON round trip (list -> tuple)
    assert normed.replace(normalize=(0.5, 0.5)).key != normed.key


@pytest.mark.parametrize("bad", [(0.5,), (0.1, 0.0), (0.1, -1.0)])
def test_bad_normalization_is_refused(bad):
    with pytest.raises(SpecError, match="normalize"):
        DataSpec("digits", n_train=10, n_test=2, normalize=bad)


def test_registered_image_settings_use_dattris_constants():
    assert PAPER_NORMALIZE == {"mnist": (0.1307, 0.3081), "cifar2": (0.5, 0.5)}
    assert get_setting("mnist-mlp").data.normalize == (0.1307, 0.3081)
    assert get_setting("cifar2-mlp").data.normalize == (0.5, 0.5)
    assert get_setting("digits-mlp").data.normalize is None
    assert get_setting("mnist-mlp", normalize=None).data.normalize is None


def test_mnist_normalized_like_torchvision(tmp_path):
    arrays = fake_mnist(tmp_path)
    spec = DataSpec("mnist", n_train=12, n_test=5, root=str(tmp_path), normalize=(0.1307, 0.3081))
    ds = load_data(spec)
    # torchvision: ToTensor (uint8 / 255 in float32), then Normalize: (x - mean) / std.
    pixels = torch.from_numpy(arrays["x_train"].reshape(12, 784).astype(np.uint8)).float() / 255
    expected = (pixels - 0.1307) / 0.3081
    torch.testing.assert_close(ds.x_train, expected, rtol=1e-6, atol=1e-6)
    assert ds.x_train.dtype == torch.float32


@pytest.mark.data
@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"no shared MNIST at {MNIST_DIR}")
def test_real_mnist_normalized_background():
    ds = load_data(get_setting("mnist-mlp", data_dir=str(MNIST_DIR), n_train=200,
                               n_test=20).data)
    background = (0.0 - 0.1307) / 0.3081
    assert float(ds.x_train.min()) == pytest.approx(background, abs=1e-6)
    assert float(ds.x_train.max()) == pytest.approx((1 - 0.1307) / 0.3081, abs=1e-5)
    assert float((ds.x_train == ds.x_train.min()).float().mean()) > 0.7  # mostly background


@pytest.mark.data
@pytest.mark.skipif(not (CIFAR2_DIR / "cifar2.npz").is_file(),
                    reason=f"no shared CIFAR-2 at {CIFAR2_DIR}")
def test_real_cifar2_normalized_range():
    ds = load_data(get_setting("cifar2-mlp", data_dir=str(CIFAR2_DIR), n_train=50,
                               n_test=10).data)
    assert -1.0 <= float(ds.x_train.min()) and float(ds.x_train.max()) <= 1.0
    assert float(ds.x_train.min()) < -0.9 and float(ds.x_train.max()) > 0.9
