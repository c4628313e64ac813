"""AR perturbations (methods.md §4.4, Appendix A): one causal AR process per class, a fresh start per row, an exact
L2 norm; the class's AR filter answers its own noise with zero; draws for classes >= 10 are checked for stability."""

from __future__ import annotations

import numpy as np
import pytest

from hf_unlearnable.errors import ProtectionError
from hf_unlearnable.methods import METHODS
from hf_unlearnable.methods.ar import (
    CIFAR10_COEFFICIENTS, STABILITY_RATIO, ARConfig, AutoregressiveNoise, ar_coefficients, ar_filter, ar_recursion,
    stability_ratio, tile_sizes)

LABELS = np.array([0, 1, 2, 0, 11, 12])
IDS = [f"row-{i}" for i in range(6)]


def method(seed=0, **options) -> AutoregressiveNoise:
    return AutoregressiveNoise(config=ARConfig.from_options("ar", seed=seed, **options))


def images(n=6, h=32, w=32) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def l2(delta: np.ndarray) -> np.ndarray:
    return np.linalg.norm(delta.reshape(len(delta), -1).astype(np.float64), axis=1)


def response(filt: np.ndarray, delta: np.ndarray) -> float:
    """Mean |valid per-channel correlation| of a [3, 3, 3] (channel, row, col) filter over deltas [N, h, w, 3]."""
    h, w = delta.shape[1:3]
    out = sum(delta[:, a:h - 2 + a, b:w - 2 + b, :].astype(np.float64) * filt[:, a, b]
              for a in range(3) for b in range(3))
    return float(np.abs(out).mean())


def test_registered_l2_per_batch_by_class():
    assert METHODS["ar"] is AutoregressiveNoise and AutoregressiveNoise.config_class is ARConfig
    assert AutoregressiveNoise.norm == "l2" and ARConfig.norm == "l2" and "norm" not in ARConfig().to_dict()
    assert AutoregressiveNoise.per_batch and AutoregressiveNoise.uses_labels and AutoregressiveNoise.uses_resolution
    assert not AutoregressiveNoise.batch_coupled
    assert ARConfig().epsilon == 1.0 and ARConfig().crop == 4


def test_shape_dtype_and_exact_l2_scaled_by_area():
    delta = method().perturb(images(), LABELS, IDS)
    assert delta.shape == (6, 32, 32, 3) and delta.dtype == np.float32 and np.isfinite(delta).all()
    np.testing.assert_allclose(l2(delta), 1.0, rtol=1e-6)
    big = method(epsilon=0.5).perturb(images(h=64, w=48), LABELS, IDS)
    assert big.shape == (6, 64, 48, 3)
    np.testing.assert_allclose(l2(big), 0.5 * np.sqrt(64 * 48 / 1024), rtol=1e-6)
    assert method().perturb(images(0), np.zeros(0, np.int64), []).shape == (0, 32, 32, 3)


def test_seeded_by_row_id_and_class_not_by_batch():
    m = method()
    a = m.perturb(images(), LABELS, IDS)
    b = m.perturb(images()[::-1], LABELS[::-1], IDS[::-1])
    np.testing.assert_array_equal(a, b[::-1])
    for i in (0, 4):
        np.testing.assert_array_equal(m.perturb(images(1), LABELS[i:i + 1], IDS[i:i + 1])[0], a[i])
    # a large, mixed batch (other SIMD / reduction lengths) gives the same bytes for the same rows
    many_ids = [f"other-{i}" for i in range(300)] + IDS
    many = m.perturb(images(306), np.concatenate([np.arange(300) % 40, LABELS]), many_ids)
    np.testing.assert_array_equal(many[300:], a)
    assert not np.array_equal(a[0], a[3])                           # two rows of class 0: each its own start
    assert not np.array_equal(m.perturb(images(), np.array([3, 1, 2, 0, 11, 12]), IDS)[0], a[0])   # class matters
    other_seed = method(seed=1).perturb(images(), LABELS, IDS)
    assert all(not np.array_equal(other_seed[i], a[i]) for i in range(6))


def test_any_class_index():
    labels = np.array([10, 999, 99_999, 123_456])
    delta = method().perturb(images(4), labels, IDS[:4])
    assert np.isfinite(delta).all()
    np.testing.assert_allclose(l2(delta), 1.0, rtol=1e-6)
    for k in labels:
        coef = ar_coefficients(0, int(k))
        assert coef.shape == (3, 8)
        np.testing.assert_allclose(coef.sum(axis=1), 1.0, rtol=1e-12)           # each channel sums to 1
        assert (stability_ratio(coef) <= STABILITY_RATIO).all()
    # Appendix A for k < 10 whatever the seed; drawn from (seed, k) above
    np.testing.assert_array_equal(ar_coefficients(5, 3), CIFAR10_COEFFICIENTS[3])
    assert not np.allclose(ar_coefficients(0, 10), ar_coefficients(1, 10))
    assert not np.allclose(ar_coefficients(0, 10), ar_coefficients(0, 11))
    fresh = ar_coefficients(0, 10).copy()
    ar_coefficients.cache_clear()
    np.testing.assert_array_equal(ar_coefficients(0, 10), fresh)                 # a pure function of (seed, k)


def test_appendix_a_as_published():
    assert CIFAR10_COEFFICIENTS.shape == (10, 3, 8)
    np.testing.assert_allclose(CIFAR10_COEFFICIENTS.sum(axis=2), 1.0, atol=3e-4)   # rounded to 4 decimals
    assert CIFAR10_COEFFICIENTS[0, 0, 0] == 0.1561 and CIFAR10_COEFFICIENTS[9, 2, 7] == 0.0321


def test_recursion_matches_the_raster_definition():
    rng = np.random.default_rng(1)
    start = rng.standard_normal((3, 9, 11))
    coef = ar_coefficients(0, 2)
    expected = start.copy()
    for c in range(3):
        window = np.append(coef[c], 0.0).reshape(3, 3)
        for i in range(9 - 2):
            for j in range(11 - 2):
                expected[c, i + 2, j + 2] = (window * expected[c, i:i + 3, j:j + 3]).sum()
    field = np.ascontiguousarray(start.transpose(1, 2, 0))
    ar_recursion(field, np.ascontiguousarray(coef.T))
    np.testing.assert_allclose(field.transpose(2, 0, 1), expected, rtol=1e-12, atol=1e-12)


def test_own_ar_filter_answers_own_class_with_zero():
    """The defining property: the class's filter (centre -1) gives ~0 on its own noise, a lot on other classes'."""
    classes = [0, 3, 7, 11, 25]
    labels = np.repeat(classes, 4)
    delta = method().perturb(images(20), labels, [f"r{i}" for i in range(20)])
    table = np.array([[response(ar_filter(ar_coefficients(0, k)), delta[labels == j]) for j in classes]
                      for k in classes])                      # row: the filter's class, column: the noise's class
    own = np.diag(table)
    others = np.where(np.eye(len(classes), dtype=bool), np.inf, table).min(axis=1)
    assert (own < 0.2 * others).all()
    assert (own < 1e-4 * others).all()                        # exactly 0 up to float32 rounding
    # still the smallest answer after the release rounds the noise to whole 1/255 steps
    rounded = np.rint(delta * 255) / 255
    table = np.array([[response(ar_filter(ar_coefficients(0, k)), rounded[labels == j]) for j in classes]
                      for k in classes])
    assert (table.argmin(axis=1) == np.arange(len(classes))).all()


def test_stability_criterion():
    diagonal_copy = np.array([0, 0, 0, 0, 1, 0, 0, 0], float)        # s[i+2, j+2] = s[i+1, j+1]: stationary
    explosive = np.array([0, 0, 0, 0, 0, 0, -2, 3], float)           # along rows y = 3y' - 2y'': root 2
    column_growth = np.array([0, 0, -2, 0, 0, 3, 0, 0], float)       # the same down the columns
    with np.errstate(all="ignore"):
        zero_sum = np.array([1, -1, 0, 0, 0, 0, 0, 0], float) / 0.0   # a draw summing to 0, normalised: not finite
    ratios = stability_ratio(np.stack([diagonal_copy, explosive, column_growth, zero_sum]))
    assert ratios[0] == pytest.approx(1.0, abs=0.5) and ratios[0] <= STABILITY_RATIO
    assert ratios[1] > 1e3
    assert ratios[2] > STABILITY_RATIO
    assert ratios[3] == np.inf

    # Raw draws (N(0, 1), written pixel 0, normalised to sum 1): most are rejected, and the rejected ones do pile
    # their energy into the last rows / columns of a generated field, which is what the check guards against.
    draws = np.random.default_rng(3).standard_normal((64, 9))[:, :8]
    draws /= draws.sum(axis=1, keepdims=True)
    ratio = stability_ratio(draws)
    kept, rejected = ratio <= STABILITY_RATIO, ratio > STABILITY_RATIO
    assert 0.05 < kept.mean() < 0.5
    field = np.tile(np.random.default_rng(4).standard_normal((36, 36, 1)), (1, 1, 64))    # an independent start
    with np.errstate(all="ignore"):
        ar_recursion(field, np.ascontiguousarray(draws.T))
        out = field[4:, 4:]
        corner = np.sqrt(np.mean(out[-8:, -8:] ** 2, axis=(0, 1)) / np.mean(out[:8, :8] ** 2, axis=(0, 1)))
        corner[~np.isfinite(corner)] = np.inf
        peak = np.abs(out).max(axis=(0, 1))
    assert (corner[rejected] > 2).all() and (corner[kept] < 2).all()     # last 8x8 vs first 8x8 block
    assert (peak[kept] < 5).all()                    # the paper's param-finder bound on N(0, 1) starts
    assert (peak[rejected] > 5).mean() > 0.8


def test_drawn_classes_are_stable_in_the_noise_itself():
    labels = np.repeat(np.arange(10, 40), 4)
    delta = method().perturb(images(len(labels)), labels, [f"s{i}" for i in range(len(labels))])
    first = np.sqrt((delta[:, :16, :16] ** 2).mean(axis=(1, 2, 3)))
    last = np.sqrt((delta[:, 16:, 16:] ** 2).mean(axis=(1, 2, 3)))
    per_class = (last / first).reshape(30, 4).mean(axis=1)
    assert per_class.max() < 2 * STABILITY_RATIO


def test_large_sizes_run_in_tiles_that_spread_the_energy():
    assert tile_sizes(32) == [32] and tile_sizes(7) == [7] and tile_sizes(33) == [17, 16]
    assert tile_sizes(128) == [32] * 4 and tile_sizes(100) == [25] * 4 and sum(tile_sizes(1000)) == 1000
    labels = np.arange(10)
    delta = method().perturb(images(10, 128, 128), labels, IDS[:1] + [f"t{i}" for i in range(9)])
    np.testing.assert_allclose(l2(delta), np.sqrt(128 * 128 / 1024), rtol=1e-6)
    # every 32x32 tile gets its share: over one 128x128 field, five classes put 80-99 % in the last quadrant
    energy = (delta.astype(np.float64) ** 2).sum(axis=3).reshape(10, 4, 32, 4, 32).sum(axis=(2, 4))
    share = energy / energy.sum(axis=(1, 2), keepdims=True)
    assert share.min() > 1 / 64 and share.max() < 1 / 3
    assert (share[:, 2:, 2:].sum(axis=(1, 2)) < 0.5).all()
    # the class's own filter still answers its noise with (near) zero, off the seams between tiles
    for k in (0, 5):
        tile = delta[k:k + 1, 32:64, 32:64]
        own = response(ar_filter(ar_coefficients(0, k)), tile)
        other = response(ar_filter(ar_coefficients(0, (k + 1) % 10)), tile)
        assert own < 1e-4 * other
    # one row's tiles: the first is what a 32x32 image of that row gets (the same stream, drawn first)
    small = method().perturb(images(1), labels[:1], IDS[:1])
    corner = delta[0, :32, :32]
    np.testing.assert_allclose(corner / l2(corner[None])[0], small[0] / l2(small)[0], rtol=1e-5, atol=1e-7)


def test_refusals():
    m = method()
    with pytest.raises(ProtectionError, match="needs labels"):
        m.perturb(images(), None, IDS)
    with pytest.raises(ProtectionError, match="label -1"):
        m.perturb(images(), np.array([0, 1, 2, -1, 4, 5]), IDS)
    with pytest.raises(ProtectionError, match="integer class indices"):
        m.perturb(images(), LABELS.astype(float), IDS)
    with pytest.raises(ProtectionError, match="needs a label column"):
        m.pseudo_labels(images())
    with pytest.raises(ProtectionError, match="crop=1"):
        ARConfig(epsilon=0.5, crop=1).validate()
    ARConfig(epsilon=0.5, crop=2).validate()
    with pytest.raises(ProtectionError, match="crop="):
        ARConfig(epsilon=0.5, crop=True).validate()
