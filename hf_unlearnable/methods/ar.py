"""Autoregressive (AR) perturbations: Sandoval-Segura, Singla, Geiping, Goldblum, Goldstein, Jacobs,
"Autoregressive Perturbations for Data Poisoning", NeurIPS 2022 (arXiv 2206.03693). Spec: methods.md §4.4 and
Appendix A.

Each class owns one causal 3x3 AR process per colour channel; every row of the class gets that process run over
its own Gaussian start (in tiles of at most 32x32 on larger images, see TILE), cropped and scaled to an exact L2
norm. The class's AR filter with -1 at the written pixel
maps its own noise to zero and other classes' noise to large values, so one conv layer tells the classes apart from
the noise alone: a network learns that shortcut instead of the images. No network, no training, no pass over the
data: the noise of a row depends only on (seed, row id, class).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar, Sequence

import numpy as np

from .._images import row_rng
from ..errors import ProtectionError
from ._registry import register
from .base import Method, MethodConfig

# methods.md Appendix A (lafeat/apbench attack/basic/ar_utils.py, RANDOM_3C_AR_PARAMS_RNMR_10): class x channel x
# the 8 coefficients of the 3x3 window in raster order without the written pixel (2, 2), whose coefficient is 0.
CIFAR10_COEFFICIENTS = np.array([
    [[+0.1561, -0.0710, +0.3743, -0.1896, +0.0461, +0.6075, +0.0539, +0.0226],
     [-0.1016, +0.2193, +0.0472, +0.1401, +0.1561, +0.1171, +0.1742, +0.2476],
     [-0.1100, +0.2703, -0.0026, +0.2662, -0.1185, +0.0846, +0.1812, +0.4287]],
    [[+0.2346, +0.2056, -0.0480, +0.4110, +0.7504, +0.1326, -0.1044, -0.5817],
     [-0.0308, -0.1085, +0.3997, +0.2187, +0.1830, +0.3389, -0.1017, +0.1008],
     [+0.1246, +0.1667, -0.1518, +0.2985, +0.1346, +0.3185, +0.3805, -0.2716]],
    [[+0.0951, +0.5501, +0.0344, -0.3431, +0.0767, +0.2239, +0.4602, -0.0972],
     [+0.1714, +0.1121, +0.1129, +0.3032, +0.2959, +0.0861, +0.2207, -0.3021],
     [+0.2720, -0.3417, +0.2115, +0.2499, +0.3690, +0.3833, -0.0282, -0.1158]],
    [[-0.4241, -0.2694, +0.4091, +0.3998, +0.1572, +0.2683, +0.2700, +0.1892],
     [+0.1246, +0.3024, +0.2110, +0.0538, +0.1997, +0.3283, +0.0372, -0.2570],
     [+0.2038, +0.3972, -0.1963, +0.3460, -0.6439, +0.7153, -0.2826, +0.4605]],
    [[+0.7873, -0.1756, -0.3509, +0.0763, +0.2261, -0.2704, +0.2491, +0.4581],
     [+0.1287, -0.1655, +0.2488, +0.3811, -0.2307, +0.3019, -0.0076, +0.3433],
     [+0.4227, +0.0690, +0.2492, +0.0896, +0.0653, -0.1653, -0.2349, +0.5043]],
    [[+0.1585, +0.2663, +0.1764, +0.0031, -0.0237, +0.3464, +0.0140, +0.0590],
     [+0.1632, +0.5094, +0.0321, +0.3935, -0.1807, +0.2110, -0.3620, +0.2334],
     [-0.2474, +0.1092, +0.3928, +0.2808, +0.3912, +0.1211, -0.0635, +0.0159]],
    [[+0.8886, -0.2459, -0.4169, -0.4120, -0.1282, +0.6105, +0.2495, +0.4546],
     [+0.0679, -0.2982, +0.1039, +0.1430, +0.1596, +0.6743, -0.2002, +0.3496],
     [-0.2195, +0.2183, -0.2665, +0.3373, +0.1907, +0.5847, +0.1977, -0.0427]],
    [[-0.3829, +0.0158, +0.4019, -0.0688, +0.1206, +0.2481, +0.1416, +0.5238],
     [-0.2271, +0.1683, +0.3593, +0.2671, -0.1225, +0.0217, +0.0266, +0.5066],
     [+0.8539, +0.3682, +0.2899, +0.6635, +0.0130, -0.7025, -0.1377, -0.3483]],
    [[+0.4482, +0.2220, +0.0598, +0.3965, -0.1148, +0.1683, -0.3444, +0.1644],
     [-0.1463, +0.6120, +0.2203, +0.4039, -0.2832, -0.1290, +0.3369, -0.0146],
     [+0.3759, +0.2814, +0.1494, +0.1925, +0.0552, +0.1091, -0.0962, -0.0673]],
    [[+0.3556, +0.3477, -0.6625, +0.1812, +0.2997, -0.2139, +0.5538, +0.1385],
     [-0.0297, +0.0780, +0.2486, +0.2246, +0.1931, +0.1349, +0.0079, +0.1426],
     [+0.2461, +0.1217, +0.1879, -0.0165, +0.1160, +0.1356, +0.1772, +0.0321]],
])
CIFAR10_COEFFICIENTS.setflags(write=False)

# Window offsets (a, b) of the 8 coefficients: the recursion writes s[i + 2, j + 2] from s[i + a, j + b].
OFFSETS = ((0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1))

# Coefficients of classes >= 10: drawn from np.random.default_rng([seed, CLASS_STREAM, k]), one channel after the
# other, CANDIDATES draws at a time; a draw is kept only if it passes the stability check below.
CLASS_STREAM = 18
CANDIDATES = 32
MAX_ROUNDS = 1000           # 32,000 draws with none kept: cannot happen (about 1 in 5 is stable), but never loop on

# Stability check (one channel's 8 coefficients): run the recursion over STABILITY_PROBES fixed N(0, 1) starts of
# (STABILITY_SIZE + 4)^2, crop 4 (the paper's 32x32 setting), and keep the draw only if every value is finite and
# the RMS of the bottom-right quadrant (written last) is at most STABILITY_RATIO x the RMS of the top-left quadrant
# (written first). A process whose energy grows along the raster scan piles it into the last rows and columns and
# fails; a stationary one scores about 1. Random draws are bimodal (about 21 % score <= 2, most others explode), so
# the threshold is not delicate. Appendix A's hand-picked CIFAR-10 processes are used as published (they score
# 0.5-4.4 here; three of their 30 channels exceed 2).
STABILITY_SIZE = 32
STABILITY_PROBES = 4
STABILITY_RATIO = 2.0
_PROBE_SEED = 20220604

# Above TILE pixels a side, the process runs in tiles of at most TILE x TILE (each from its own start) rather than
# over the whole field: the processes are stationary over 32x32 (the paper's size, and the stability check's), not
# beyond. Over one 128x128 field, five of Appendix A's ten classes put 80-99 % of their energy into the bottom-right
# quadrant (90 % of it on 4-9 % of the pixels), leaving most of the image nearly unperturbed; tiled, every class
# spreads it as at 32x32. The class's filter still answers every tile with zero, except on the seams.
TILE = 32


@dataclass
class ARConfig(MethodConfig):
    """AR options; defaults are the paper's CIFAR-10 values (methods.md §4.4)."""

    norm: ClassVar[str] = "l2"
    epsilon: float = 1.0        # L2 norm of the whole delta of a 32x32 image (scaled by sqrt(area / 1024))
    crop: int = 4               # rows / columns of the start dropped from the top and the left (>= 2: the first
                                # two are the raw random start, never written by the recursion)

    def validate(self) -> None:
        super().validate()
        if not 2 <= self.crop <= 64:
            raise ProtectionError(f"crop={self.crop!r} must be an integer from 2 to 64 (the first 2 rows / columns "
                                  "are the raw random start); the paper uses 4.")


@register
class AutoregressiveNoise(Method):
    """delta = the class's AR process over a (seed, row id)-seeded N(0, 1) start, cropped, at an exact L2 norm."""

    name = "ar"
    config_class = ARConfig
    norm: ClassVar[str] = "l2"
    uses_resolution = True       # drawn at the working resolution, then upsampled by the transform
    uses_labels = True

    def perturb(self, images: np.ndarray, labels: np.ndarray | None, ids: Sequence[str]) -> np.ndarray:
        b, h, w = batch_shape(images, ids)
        classes = class_indices(self.name, labels, ids)
        seed, crop = self.config.seed, self.config.crop
        coef = np.stack([ar_coefficients(seed, int(k)) for k in classes]) if b else np.zeros((0, 3, 8))
        coef = coef.transpose(2, 0, 1).reshape(8, b * 3)
        rngs = [row_rng(seed, rid) for rid in ids]
        delta = np.empty((b, h, w, 3))
        top = 0
        for th in tile_sizes(h):
            left = 0
            for tw in tile_sizes(w):        # each tile its own start, drawn from the row's stream in raster order
                starts = np.empty((b, 3, th + crop, tw + crop))
                for n, rng in enumerate(rngs):
                    starts[n] = rng.standard_normal((3, th + crop, tw + crop))
                field = np.ascontiguousarray(starts.transpose(2, 3, 0, 1))   # [row, col, image, channel]
                ar_recursion(field.reshape(th + crop, tw + crop, b * 3), coef)
                delta[:, top:top + th, left:left + tw] = field[crop:, crop:].transpose(2, 0, 1, 3)
                left += tw
            top += th
        return scale_to_l2(self.name, delta, self.config.epsilon, ids)


def tile_sizes(n: int) -> list[int]:
    """n pixels as the fewest near-equal tiles of at most TILE (one tile, n itself, up to TILE)."""
    k = -(-n // TILE)
    return [n // k + (i < n % k) for i in range(k)]


def ar_recursion(field: np.ndarray, coef: np.ndarray) -> None:
    """In place, over field [H, W, N] (N independent channels) with coefficients coef [8, N]: in raster order,
    field[i + 2, j + 2] = sum_t coef[t] * field[i + a_t, j + b_t] over OFFSETS. The six terms from the two rows above
    are summed for a whole row at once; the two from the same row (already written) one position at a time. Every
    value is a fixed sequence of element-wise float64 operations: its bytes do not depend on N or its neighbours."""
    c0, c1, c2, c3, c4, c5, c6, c7 = coef
    for i in range(field.shape[0] - 2):
        top, mid, row = field[i], field[i + 1], field[i + 2]
        above = c0 * top[:-2]
        above += c1 * top[1:-1]
        above += c2 * top[2:]
        above += c3 * mid[:-2]
        above += c4 * mid[1:-1]
        above += c5 * mid[2:]
        for j in range(field.shape[1] - 2):
            row[j + 2] = above[j] + c6 * row[j] + c7 * row[j + 1]


def stability_ratio(coef: np.ndarray) -> np.ndarray:
    """For channel coefficients coef [M, 8]: RMS of the bottom-right over the top-left quadrant of the process run
    over the fixed probes (inf where any value is not finite). The draw is stable iff the ratio <= STABILITY_RATIO."""
    coef = np.asarray(coef, dtype=np.float64)
    m, p, size = len(coef), STABILITY_PROBES, STABILITY_SIZE
    probes = np.random.default_rng(_PROBE_SEED).standard_normal((size + 4, size + 4, p))
    field = np.tile(probes, (1, 1, m))                                  # column m * p + q: candidate m, probe q
    with np.errstate(all="ignore"):
        ar_recursion(field, np.repeat(coef.T, p, axis=1))
        out = field[4:, 4:].reshape(size, size, m, p)
        half = size // 2
        first = np.sqrt(np.mean(out[:half, :half] ** 2, axis=(0, 1, 3)))
        last = np.sqrt(np.mean(out[half:, half:] ** 2, axis=(0, 1, 3)))
        ratio = last / first
    finite = np.isfinite(out).all(axis=(0, 1, 3)) & np.isfinite(coef).all(axis=1) & (first > 0)
    return np.where(finite & np.isfinite(ratio), ratio, np.inf)


@lru_cache(maxsize=2 ** 17)
def ar_coefficients(seed: int, k: int) -> np.ndarray:
    """The [3, 8] AR coefficients of class k: Appendix A for k < 10 (any seed); else, per channel, the first stable
    draw of N(0, 1) coefficients (the written pixel's set to 0) normalised to sum 1, from the (seed, k) stream."""
    if k < len(CIFAR10_COEFFICIENTS):
        return CIFAR10_COEFFICIENTS[k]
    rng = np.random.default_rng([seed, CLASS_STREAM, k])
    kept: list[np.ndarray] = []
    for _ in range(MAX_ROUNDS):
        draws = rng.standard_normal((CANDIDATES, 9))[:, :8]          # the 9th (the written pixel) is 0
        with np.errstate(all="ignore"):
            draws = draws / draws.sum(axis=1, keepdims=True)
        kept.extend(draws[stability_ratio(draws) <= STABILITY_RATIO])
        if len(kept) >= 3:
            coef = np.stack(kept[:3])
            coef.setflags(write=False)
            return coef
    raise ProtectionError(f"ar: found no stable AR process for class {k} in {MAX_ROUNDS * CANDIDATES:,} draws.")


def ar_filter(coef: np.ndarray) -> np.ndarray:
    """The [3, 3, 3] (channel, row, col) filter that answers a class's process: its coefficients with -1 at (2, 2).
    Applied (valid correlation, per channel) to that class's noise it gives 0."""
    f = np.zeros((3, 9))
    f[:, :8] = coef
    f[:, 8] = -1.0
    return f.reshape(3, 3, 3)


# -- shared by the L2 methods (ar, lsp) ----------------------------------------------------------------------------

def batch_shape(images: np.ndarray, ids: Sequence[str]) -> tuple[int, int, int]:
    shape = np.shape(images)
    if len(shape) != 4 or shape[-1] != 3:
        raise ProtectionError(f"expected a batch of RGB images [B, h, w, 3], got shape {shape}.")
    if len(ids) != shape[0]:
        raise ProtectionError(f"{len(ids)} row id(s) for a batch of {shape[0]} image(s).")
    return int(shape[0]), int(shape[1]), int(shape[2])


def class_indices(name: str, labels: np.ndarray | None, ids: Sequence[str]) -> np.ndarray:
    """The labels as non-negative int64 class indices, one per row (no upper bound: any class index works)."""
    if labels is None:
        raise ProtectionError(f"{name} needs labels: its noise is drawn per class. Pass label_column=...")
    arr = np.asarray(labels)
    if arr.shape != (len(ids),):
        raise ProtectionError(f"{name}: {arr.shape} labels for a batch of {len(ids)} row(s).")
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise ProtectionError(f"{name} needs integer class indices as labels, got dtype {arr.dtype}.")
    arr = arr.astype(np.int64)
    bad = np.flatnonzero(arr < 0)
    if bad.size:
        raise ProtectionError(f"{name}: row {ids[bad[0]]!r} has label {arr[bad[0]]}; labels must be class indices "
                              ">= 0 (an unlabelled row, -1, cannot be protected by a per-class method).")
    return arr


def scale_to_l2(name: str, delta: np.ndarray, epsilon: float, ids: Sequence[str]) -> np.ndarray:
    """delta [B, h, w, 3] (float64) scaled so that each row's L2 norm is epsilon * sqrt(h * w / 1024), as float32."""
    b, h, w = delta.shape[:3]
    target = float(epsilon) * np.sqrt(h * w / 1024)
    with np.errstate(all="ignore"):
        norms = np.sqrt(np.sum(np.square(delta).reshape(b, h * w * 3), axis=1))
    bad = np.flatnonzero(~np.isfinite(norms) | (norms == 0))
    if bad.size:
        raise ProtectionError(f"{name}: the noise of row {ids[bad[0]]!r} is not finite (or is zero) at {h}x{w}; "
                              "use a smaller working resolution (resolution=...).")
    return (delta * (target / norms)[:, None, None, None]).astype(np.float32)
