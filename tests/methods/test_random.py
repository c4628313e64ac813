"""Uniform random noise: the baseline. Uniform in the epsilon box, seeded by (seed, row id), not by position."""

from __future__ import annotations

import numpy as np
import pytest

from hf_unlearnable import craft
from hf_unlearnable.methods import METHODS
from hf_unlearnable.methods.random import RandomConfig, RandomNoise
from tests.conftest import build_dataset, tiny_images


def test_registered_with_a_per_batch_form():
    assert METHODS["random"] is RandomNoise
    assert RandomNoise.per_batch and not RandomNoise.uses_labels and RandomNoise.config_class is RandomConfig


def test_uniform_in_the_box():
    method = RandomNoise(epsilon=4 / 255, seed=0)
    images = np.zeros((64, 8, 8, 3), dtype=np.uint8)
    delta = method.perturb(images, None, [f"row-{i}" for i in range(64)])
    assert delta.shape == images.shape and delta.dtype == np.float32
    assert np.abs(delta).max() <= 4 / 255
    assert abs(delta.mean()) < 0.05 * 4 / 255               # centred
    assert np.abs(delta).mean() == pytest.approx(2 / 255, rel=0.05)   # E|U(-e, e)| = e / 2
    quantised = np.rint(delta * 255)
    assert set(np.unique(quantised).tolist()) == {-4, -3, -2, -1, 0, 1, 2, 3, 4}


def test_seeded_by_row_id_not_position():
    method = RandomNoise(seed=0)
    images = np.zeros((3, 4, 4, 3), dtype=np.uint8)
    a = method.perturb(images, None, ["x", "y", "z"])
    b = method.perturb(images[::-1], None, ["z", "y", "x"])
    np.testing.assert_array_equal(a, b[::-1])
    single = method.perturb(images[:1], None, ["y"])
    np.testing.assert_array_equal(single[0], a[1])
    assert not np.array_equal(a[0], a[1])                                          # each row its own noise
    assert not np.array_equal(RandomNoise(seed=1).perturb(images, None, ["x", "y", "z"]), a)


def test_craft_gives_samplewise_noise_keyed_by_content():
    from hf_unlearnable._images import row_id

    ds = build_dataset(n=12)
    noise = craft(ds, "random", seed=0)
    assert noise.kind == "samplewise" and noise.method == "random"
    assert noise.ids == [row_id(a) for a in tiny_images(12)]
    assert np.abs(noise.steps).max() == 8
    assert noise.config.method_config == {"epsilon": pytest.approx(8 / 255), "seed": 0}
