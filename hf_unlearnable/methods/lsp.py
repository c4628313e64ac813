"""Linearly separable perturbations (LSP): Yu, Zhang, Chen, Yin, Liu, "Availability Attacks Create Shortcuts",
KDD 2022 (arXiv 2111.00898). Spec: methods.md §4.5.

Each class owns a far-apart centre in a small patch space (a 4x4 grid of patches x 3 colours = 48 values at the
default patch 8 at 32 px); a row's delta is its class centre plus unit Gaussian noise, each value spread over its
patch (nearest upsampling), scaled to an exact L2 norm. The classes' patterns form clusters that a linear model
separates from the noise alone, so a network learns that shortcut instead of the images. No network, no
training, no pass over the data (and no sklearn: the centres are drawn directly, as make_classification's
hypercube vertices with class_sep, without its random per-cluster covariance).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar, Sequence

import numpy as np

from .._images import row_rng
from ..errors import ProtectionError
from ._registry import register
from .ar import batch_shape, class_indices, scale_to_l2
from .base import Method, MethodConfig

REFERENCE_SIZE = 32          # `patch` is in pixels of a 32x32 image: the grid is (32 // patch) x (32 // patch)
PATCHES = (1, 2, 4, 8, 16, 32)
CLASS_STREAM = 17            # class centres come from np.random.default_rng([seed, CLASS_STREAM, k])


@dataclass
class LSPConfig(MethodConfig):
    """LSP options; defaults are the paper's CIFAR-10 values (methods.md §4.5)."""

    norm: ClassVar[str] = "l2"
    epsilon: float = (3072 ** 0.5) * 6 / 255   # L2 of the delta of a 32x32 image (L-inf 6/255 spread evenly)
    patch: int = 8              # patch side at 32 px; at any working size the grid stays (32 // patch) squared
    class_sep: float = 10.0     # class centres at +-class_sep on every axis (make_classification's class_sep)

    def validate(self) -> None:
        super().validate()
        if self.patch not in PATCHES:
            raise ProtectionError(f"patch={self.patch!r} must divide 32: one of {PATCHES} (the paper uses 8, a "
                                  "4x4 grid of patches).")
        if not self.class_sep > 0:
            raise ProtectionError(f"class_sep={self.class_sep!r} must be a positive number; the paper uses 10.")


@register
class LinearlySeparableNoise(Method):
    """delta = class centre + N(0, I) in the (32 // patch)^2 x 3 grid, nearest-upsampled, at an exact L2 norm."""

    name = "lsp"
    config_class = LSPConfig
    norm: ClassVar[str] = "l2"
    uses_resolution = True       # drawn at the working resolution, then upsampled by the transform
    uses_labels = True

    def perturb(self, images: np.ndarray, labels: np.ndarray | None, ids: Sequence[str]) -> np.ndarray:
        b, h, w = batch_shape(images, ids)
        classes = class_indices(self.name, labels, ids)
        cfg = self.config
        grid = REFERENCE_SIZE // cfg.patch
        dim = grid * grid * 3
        points = np.empty((b, dim))
        for n, (k, rid) in enumerate(zip(classes, ids)):
            points[n] = cfg.class_sep * class_signs(cfg.seed, int(k), dim) + row_rng(cfg.seed, rid).standard_normal(dim)
        rows = np.arange(h) * grid // h              # nearest upsampling: output row -> grid row
        cols = np.arange(w) * grid // w
        delta = points.reshape(b, grid, grid, 3)[:, rows][:, :, cols]
        return scale_to_l2(self.name, delta, cfg.epsilon, ids)


@lru_cache(maxsize=2 ** 17)
def class_signs(seed: int, k: int, dim: int) -> np.ndarray:
    """Class k's hypercube vertex: a +-1 vector of `dim` values from the (seed, k) stream (read-only)."""
    signs = np.random.default_rng([seed, CLASS_STREAM, k]).integers(0, 2, size=dim) * 2.0 - 1.0
    signs.setflags(write=False)
    return signs
