"""Budgets in the norm each method declares (`MethodConfig.norm`): L-inf, L2 or L0, held on the released uint8 pixels.

- "linf": `epsilon` in [0, 1] pixel units bounds every colour value's change (8/255: at most 8 steps).
- "l2": `epsilon` bounds the L2 norm of the whole change (all colour values, [0, 1] pixel units) of a 32x32 image,
  as the papers state it (AR: 1.0); an image of h x w pixels gets epsilon * sqrt(h * w / 1024), the same strength
  per pixel at every size.
- "l0": `epsilon` counts changed pixel positions of a 32x32 image (OPS: 1); an image of h x w pixels may change
  epsilon cells of a 32x32 grid laid over it, each at most ceil(h / 32) x ceil(w / 32) pixels.

Noise reaches an image as float pixel units at the working size; `to_steps` brings it to the image's own size
(nearest neighbour, so the pattern keeps its strength) and rounds it to whole uint8 steps inside the budget, and
`measure` is what the transform checks on every released row.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import ProtectionError

NORMS = ("linf", "l2", "l0")
REFERENCE_SIDE = 32            # L2 and L0 budgets are stated for a 32x32 image (CIFAR), as in the papers
MAX_L2 = 32.0                  # far above any published budget (AR 1.0, LSP 1.3); beyond it the image is gone
_NAMES = {"linf": "L∞", "l2": "L2", "l0": "L0"}


def check_budget(norm: str, epsilon: Any) -> float:
    """Validate `epsilon` as a budget in `norm`; returns it as float (int-valued for L0)."""
    if norm == "linf":
        from ._images import check_epsilon

        return check_epsilon(epsilon)
    if isinstance(epsilon, (bool, np.bool_)) or not isinstance(epsilon, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(epsilon)):
        raise ProtectionError(f"epsilon={epsilon!r} must be a finite number: the {_NAMES[norm]} budget "
                              f"({describe(norm, 1.0 if norm == 'l2' else 1)} is this method's unit).")
    eps = float(epsilon)
    if norm == "l2" and not 0 < eps <= MAX_L2:
        raise ProtectionError(f"epsilon={eps!r} is an L2 budget over a 32x32 image in [0, 1] pixel units: it must be "
                              f"in (0, {MAX_L2:g}] (AR's default is 1.0, about 4.6/255 per colour value).")
    if norm == "l0" and (eps != int(eps) or not 1 <= eps <= REFERENCE_SIDE ** 2):
        raise ProtectionError(f"epsilon={eps!r} is an L0 budget, a number of pixels of a 32x32 image: a whole "
                              f"number from 1 to {REFERENCE_SIDE ** 2}.")
    return eps


def describe(norm: str, epsilon: float) -> str:
    """The budget as a card or a log states it: "L∞ 8/255", "L2 1.00 (per 32x32 image)", "L0 1 pixel (...)"."""
    if norm == "linf":
        from ._images import epsilon_levels

        return f"L∞ {epsilon_levels(epsilon)}/255"
    if norm == "l2":
        return f"L2 {epsilon:.2f} (per 32x32 image, [0, 1] pixel units; scaled by the square root of the area)"
    n = int(epsilon)
    return f"L0 {n} pixel{'s' if n != 1 else ''} (of a 32x32 grid laid over the image)"


def budget(norm: str, epsilon: float, shape: tuple) -> float:
    """The budget of one image of `shape` (h, w, ...) in whole uint8 steps (L-inf, L2) or changed pixels (L0)."""
    h, w = shape[:2]
    if norm == "linf":
        from ._images import epsilon_levels

        return float(epsilon_levels(epsilon))
    if norm == "l2":
        return epsilon * 255.0 * math.sqrt(h * w / REFERENCE_SIDE ** 2)
    return float(int(epsilon) * math.ceil(h / REFERENCE_SIDE) * math.ceil(w / REFERENCE_SIDE))


def measure(norm: str, diff: np.ndarray) -> float:
    """The size of a change (int, h x w x C colour channels, in steps) in `norm`: the quantity `budget` bounds."""
    if norm == "linf":
        return float(np.abs(diff).max(initial=0))
    if norm == "l2":
        return float(np.sqrt((diff.astype(np.float64) ** 2).sum()))
    return float(np.count_nonzero(np.any(diff != 0, axis=2)))


def upscale(delta: np.ndarray, shape: tuple) -> np.ndarray:
    """Float noise (h0 x w0 x C) at an image of `shape` (h, w, C'): gray images take the colour average; nearest
    neighbour ("nearest-exact"), as _images.resize_steps does for whole steps."""
    d = np.asarray(delta, dtype=np.float64)
    h, w, c = shape
    if c <= 2 and d.shape[2] != 1:
        d = d.mean(axis=2, keepdims=True)
    h0, w0 = d.shape[:2]
    if (h0, w0) == (h, w):
        return d
    from ._images import nearest_index

    return d[nearest_index(h, h0)][:, nearest_index(w, w0)]


def to_steps(norm: str, delta: np.ndarray, shape: tuple, epsilon: float) -> np.ndarray:
    """Noise (float pixel units, any size) as whole steps (int16, the image's h x w x C') inside the image's budget.

    L2: rounded to the nearest step, then shrunk until the rounded noise fits (rounding can add up to half a step
    per value); L0: the noise must already change few enough pixels (methods place their pixels themselves)."""
    full = upscale(delta, shape) * 255.0
    limit = budget(norm, epsilon, shape)
    if norm == "linf":
        return np.clip(np.rint(full), -limit, limit).astype(np.int16)
    steps = np.rint(full)
    if norm == "l2":
        for _ in range(50):
            size = measure(norm, steps)
            if size <= limit:
                break
            full *= limit / size * (1 - 1e-6)
            steps = np.rint(full)
        else:     # truncation never enlarges a value: the float noise, shrunk to fit, bounds it
            size = measure(norm, full)
            steps = np.trunc(full * min(1.0, limit / size) if size else full)
    elif measure(norm, steps) > limit:
        raise ProtectionError(f"the noise changes {measure(norm, steps):.0f} pixels of a {shape[0]}x{shape[1]} image, "
                              f"more than its L0 budget of {limit:.0f}.")
    return np.clip(steps, -255, 255).astype(np.int16)
