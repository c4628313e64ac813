"""One-pixel shortcut (OPS; Wu et al., ICLR 2023): every image of a class gets one pixel set to one corner colour.

A network trained on such data learns "this pixel is this colour" long before the picture: an L0 budget of one
pixel (in L-inf it is large). The paper picks each class's (position, colour) by searching the class's images for
the most consistent deviation (methods.md §4.6), which needs the whole class at once. Here each class gets a
distinct (position, colour) pair drawn from (seed, class), the colour a corner of the colour cube: rows are
protected one batch at a time and their bytes do not depend on batching. The pixel is a cell of a 32x32 grid laid
over the image (a block of about h/32 x w/32 pixels), so it survives the resize a scraper's pipeline applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..errors import ProtectionError
from .._norms import REFERENCE_SIDE
from ._registry import register
from .base import Method, MethodConfig

# the corners of the colour cube but black and white, which photos hold in their saturated regions: a cell already
# at its class colour would leave the row unchanged (and refused as unprotected)
_CORNERS = np.array([[(i >> 2) & 1, (i >> 1) & 1, i & 1] for i in range(1, 7)], dtype=np.float32)
MAX_CLASSES = REFERENCE_SIDE ** 2 * len(_CORNERS)       # distinct (cell, colour) pairs


@dataclass
class OPSConfig(MethodConfig):
    norm: ClassVar[str] = "l0"
    epsilon: float = 1       # changed cells of the 32x32 grid; OPS is one pixel


@register
class OnePixelShortcut(Method):
    """Per batch: each row's class pixel set to its class colour; labels needed (pseudo-classes without them)."""

    name = "ops"
    config_class = OPSConfig
    norm = "l0"
    uses_labels = True
    uses_resolution = False      # works on each image at its own size: the pixel is set exactly
    sets_pixels = True           # a row whose class pixel already has the class colour is released as it is

    def class_pixels(self, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cells [K, n, 2] as (row, col) of the 32x32 grid, colours [K, n, 3]) for class indices: n = epsilon
        pairs per class, all distinct across classes, drawn from the seed."""
        n = int(self.config.epsilon)
        classes = np.asarray(classes, dtype=np.int64)
        if classes.size and (classes.min() < 0 or (classes.max() + 1) * n > MAX_CLASSES):
            raise ProtectionError(f"ops gives each class {n} distinct pixel-colour pair(s) of a 32x32 grid, at most "
                                  f"{MAX_CLASSES // n} classes: label {int(classes.max())} is out of range.")
        order = np.random.default_rng([int(self.config.seed), 0x0B5]).permutation(MAX_CLASSES)
        pairs = order[(classes[:, None] * n + np.arange(n)[None, :])]          # K, n
        cells = np.stack([pairs // len(_CORNERS) // REFERENCE_SIDE, pairs // len(_CORNERS) % REFERENCE_SIDE], -1)
        return cells, _CORNERS[pairs % len(_CORNERS)]

    def perturb(self, images, labels, ids):
        if labels is None:
            raise ProtectionError("ops needs labels: each class gets its own pixel.")
        n, h, w, _ = images.shape
        cells, colours = self.class_pixels(labels)
        x = images.astype(np.float32) / 255.0
        delta = np.zeros_like(x)
        rows, cols = _grid_map(h), _grid_map(w)       # full-size pixels of each grid cell
        for i in range(n):
            for (r, c), colour in zip(cells[i], colours[i]):
                block = np.ix_(rows[r], cols[c])
                delta[i][block] = colour - x[i][block]
        return delta


def _grid_map(size: int) -> list[np.ndarray]:
    """For each of the 32 grid cells along a side of `size` pixels, the pixels it covers: the pixels that nearest-
    neighbour resizing to 32 maps onto it (about size/32 of them), or the one nearest pixel when size < 32."""
    if size >= REFERENCE_SIDE:
        cell = np.arange(size) * REFERENCE_SIDE // size
        return [np.flatnonzero(cell == r) for r in range(REFERENCE_SIDE)]
    return [np.array([r * size // REFERENCE_SIDE]) for r in range(REFERENCE_SIDE)]
