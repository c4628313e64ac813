"""_norms: budgets in L-inf, L2 and L0, what they allow at every image size, and rounding that stays inside them."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from hf_unlearnable import _norms
from hf_unlearnable.errors import ProtectionError


@pytest.mark.parametrize("norm, value, words", [
    ("l2", 0.0, "(0, 32]"), ("l2", -1.0, "(0, 32]"), ("l2", 100.0, "(0, 32]"), ("l2", float("nan"), "finite"),
    ("l2", "1.0", "finite"), ("l2", True, "finite"), ("l0", 0, "whole number"), ("l0", 1.5, "whole number"),
    ("l0", 2000, "whole number"), ("linf", 8, "did you mean"),
])
def test_bad_budgets_are_refused(norm, value, words):
    with pytest.raises(ProtectionError, match=re.escape(words)):
        _norms.check_budget(norm, value)


def test_budgets_scale_with_the_area():
    assert _norms.check_budget("l2", 1) == 1.0 and _norms.check_budget("l0", np.int64(3)) == 3.0
    assert _norms.budget("l2", 1.0, (32, 32)) == pytest.approx(255.0)
    assert _norms.budget("l2", 1.0, (64, 128)) == pytest.approx(255.0 * math.sqrt(8))
    assert _norms.budget("l0", 1, (32, 32)) == 1 and _norms.budget("l0", 2, (48, 70)) == 2 * 2 * 3
    assert _norms.budget("linf", 8 / 255, (500, 20)) == 8
    assert _norms.describe("linf", 8 / 255) == "L∞ 8/255" and _norms.describe("l2", 1.0).startswith("L2 1.00")
    assert _norms.describe("l0", 1).startswith("L0 1 pixel ")


def test_measure():
    d = np.zeros((4, 4, 3), dtype=np.int16)
    d[0, 0] = [3, -4, 0]
    d[2, 1, 2] = 1
    assert _norms.measure("linf", d) == 4 and _norms.measure("l0", d) == 2
    assert _norms.measure("l2", d) == pytest.approx(math.sqrt(26))


@pytest.mark.parametrize("shape", [(32, 32, 3), (48, 70, 3), (31, 17, 1), (100, 64, 3)])
@pytest.mark.parametrize("seed", range(5))
def test_l2_rounding_stays_inside_the_budget_and_near_it(shape, seed):
    rng = np.random.default_rng(seed)
    delta = rng.normal(size=(32, 32, 3))
    delta *= 1.0 / np.linalg.norm(delta)             # exactly L2 1.0 at 32x32, as AR and LSP hand it over
    steps = _norms.to_steps("l2", delta, shape, 1.0)
    assert steps.shape == shape and steps.dtype == np.int16
    size, limit = _norms.measure("l2", steps), _norms.budget("l2", 1.0, shape)
    assert size <= limit
    if shape[2] == 3:
        assert size >= 0.9 * limit                    # rounding does not throw the budget away


def test_l2_spiky_noise_is_shrunk_until_it_fits():
    delta = np.zeros((32, 32, 3))
    delta[0, 0, 0], delta[5, 5, 1] = 0.7, 0.7 + 1e-3    # L2 just above 0.99, two values 0.7 each
    steps = _norms.to_steps("l2", delta * (1.0 / np.linalg.norm(delta)), (32, 32, 3), 1.0)
    assert _norms.measure("l2", steps) <= 255.0


def test_l0_noise_must_already_fit():
    delta = np.zeros((32, 32, 3))
    delta[3, 4] = [1.0, -1.0, 0.5]
    steps = _norms.to_steps("l0", delta, (64, 64, 3), 1)
    assert _norms.measure("l0", steps) == 4 == _norms.budget("l0", 1, (64, 64, 3))     # one 2x2 cell
    delta[10, 10, 0] = 0.5
    with pytest.raises(ProtectionError, match="L0 budget"):
        _norms.to_steps("l0", delta, (32, 32, 3), 1)


def test_upscale_is_nearest_and_gray_takes_the_mean():
    d = np.arange(12, dtype=np.float64).reshape(2, 2, 3)
    up = _norms.upscale(d, (4, 6, 3))
    assert up.shape == (4, 6, 3) and np.array_equal(up[:2, :3], np.broadcast_to(d[0, 0], (2, 3, 3)))
    gray = _norms.upscale(d, (2, 2, 1))
    assert np.allclose(gray[..., 0], d.mean(2))
