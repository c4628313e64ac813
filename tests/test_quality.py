"""hf_unlearnable._quality: PSNR / SSIM / L-inf of protected against original images."""

from __future__ import annotations

import numpy as np
import pytest

from hf_unlearnable import _quality


def test_psnr_known_values():
    a = np.full((8, 8, 3), 100, np.uint8)
    assert _quality.psnr(a, a) == float("inf")
    for d in (1, 4, 8):
        assert _quality.psnr(a + d, a) == pytest.approx(20 * np.log10(255 / d))


def test_ssim_properties_and_against_torchmetrics():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    noisy = np.clip(a.astype(int) + rng.integers(-8, 9, a.shape), 0, 255).astype(np.uint8)
    assert _quality.ssim(a, a) == pytest.approx(1.0)
    s = _quality.ssim(noisy, a)
    assert 0 < s < 1 and _quality.ssim(a, noisy) == pytest.approx(s)   # symmetric
    assert _quality.ssim(255 - a, a) < 0.1                               # unrelated content scores low
    tm = pytest.importorskip("torchmetrics.functional.image")
    import torch

    ref = tm.structural_similarity_index_measure(torch.from_numpy(noisy).permute(2, 0, 1)[None].double(),
                                                  torch.from_numpy(a).permute(2, 0, 1)[None].double(),
                                                  data_range=255.0, kernel_size=11, sigma=1.5)
    assert s == pytest.approx(float(ref), abs=2e-3)


def test_compare_summary():
    a = [np.full((4, 4, 3), 50, np.uint8), np.full((4, 4, 3), 60, np.uint8)]
    b = [a[0] + 3, a[1].copy()]
    out = _quality.compare(b, a)
    assert out["rows"] == 2 and out["identical_rows"] == 1 and out["linf_255"] == 3
    assert out["psnr_mean"] == pytest.approx(20 * np.log10(255 / 3))
    with pytest.raises(ValueError, match="image 0"):
        _quality.compare([np.zeros((4, 4, 3), np.uint8)], [np.zeros((5, 4, 3), np.uint8)])
