"""The one preprocessing path: scaling by dtype, antialiased resize, normalisation, and their composition."""
import numpy as np
import pytest
import torch

from mmkd_ros.core import preprocess


@pytest.fixture
def rgb():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)  # [H, W, 3]


def test_to_tensor01_scales_by_dtype():
    eight = np.full((2, 3, 3), 255, np.uint8)
    sixteen = np.full((2, 3, 1), 65535 // 2, np.uint16)
    t8, t16 = preprocess.to_tensor01(eight), preprocess.to_tensor01(sixteen)
    assert t8.shape == (3, 2, 3) and t8.dtype == torch.float32 and torch.all(t8 == 1.0)
    assert t16.shape == (1, 2, 3) and torch.allclose(t16, torch.tensor(0.5), atol=1e-4)
    assert preprocess.to_tensor01(np.zeros((2, 3), np.uint8)).shape == (1, 2, 3)
    with pytest.raises(ValueError, match="uint8 or uint16"):
        preprocess.to_tensor01(np.zeros((2, 3, 1), np.float32))


def test_resize_normalize_prepare(rgb):
    t = preprocess.to_tensor01(rgb)
    assert preprocess.resize(t, (6, 5)) is t
    small = preprocess.resize(t, (3, 2))
    assert small.shape == (3, 3, 2)
    assert preprocess.resize(t.unsqueeze(0), (4, 4)).shape == (1, 3, 4, 4)
    normed = preprocess.normalize(t, [0.5] * 3, [0.25] * 3)
    assert torch.allclose(normed, (t - 0.5) / 0.25)
    with pytest.raises(ValueError, match="3 channels"):
        preprocess.normalize(t, [0.5], [0.25])
    prepared = preprocess.prepare(rgb, (3, 2), [0.5] * 3, [0.25] * 3)
    assert torch.allclose(prepared, (small - 0.5) / 0.25)


def test_resize_antialias_averages_fine_texture():
    stripes = np.zeros((64, 64, 1), np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes
    small = preprocess.resize(preprocess.to_tensor01(stripes), (8, 8))
    assert torch.allclose(small, torch.tensor(0.5), atol=0.05)
