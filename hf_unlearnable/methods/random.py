"""Uniform random noise in the epsilon box: the baseline that should *not* protect anything (EM paper, §2.1)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._images import row_rng
from ._registry import register
from .base import Method, MethodConfig


@dataclass
class RandomConfig(MethodConfig):
    pass


@register
class RandomNoise(Method):
    """delta ~ U(-epsilon, epsilon) per pixel, seeded by (seed, row id) so bytes do not depend on batching."""

    name = "random"
    config_class = RandomConfig
    uses_resolution = False      # no network: i.i.d. noise on every pixel of the image's own size

    def perturb(self, images, labels, ids):
        eps = self.config.epsilon
        out = []
        for img, rid in zip(images, ids):
            out.append(row_rng(self.config.seed, rid).uniform(-eps, eps, size=img.shape).astype(np.float32))
        return np.stack(out)
