"""Image plumbing shared by the transform, crafting and evaluation: decode, validate, quantise, encode, row ids.

Everything here speaks uint8 HWC numpy arrays at the boundary and float [0, 1] NCHW torch tensors inside.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any, Sequence

import numpy as np
import PIL.Image
import PIL.ImageOps

from .errors import ProtectionError

# Upper bound on epsilon: beyond a quarter of the pixel range a perturbation is no longer "small" and is almost
# certainly a unit mistake (8 instead of 8/255).
MAX_EPSILON = 64 / 255


def check_seed(seed) -> int:
    """A seed every generator here takes (NumPy, torch, Python): an integer in [0, 2**63)."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2 ** 63:
        raise ProtectionError(f"seed={seed!r} must be an integer from 0 to 2**63 - 1.")
    return int(seed)


def check_epsilon(epsilon: float) -> float:
    """Validate an L-inf budget in [0, 1] pixel units and return it as float."""
    if isinstance(epsilon, (bool, np.bool_)):
        raise ProtectionError(f"epsilon={epsilon!r} is not a number; pass a float in pixel units, e.g. 8/255.")
    try:
        eps = float(epsilon)
    except (TypeError, ValueError):
        raise ProtectionError(f"epsilon={epsilon!r} is not a number; pass a float in pixel units, e.g. 8/255.") from None
    if not np.isfinite(eps) or eps <= 0:
        raise ProtectionError(f"epsilon={epsilon!r} must be positive; the default is 8/255.")
    if eps >= 1:
        raise ProtectionError(
            f"epsilon={epsilon!r} is in 0-255 units, but epsilon is in [0, 1] pixel units: did you mean {eps:g}/255?"
        )
    if eps > MAX_EPSILON + 1e-12:
        raise ProtectionError(f"epsilon={eps:.4f} ({eps * 255:.1f}/255) exceeds the maximum 64/255; use a smaller budget.")
    if eps * 255 < 1 - 1e-6:
        raise ProtectionError(
            f"epsilon={eps:.5f} is below 1/255: after uint8 quantisation the image would not change. Use at least 1/255."
        )
    return eps


def epsilon_levels(epsilon: float) -> int:
    """The largest whole number of uint8 steps that stays within epsilon (8/255 -> 8)."""
    return int(np.floor(float(epsilon) * 255 + 1e-6))


def _row_name(position: int, indices: Sequence[int] | None) -> str:
    if indices is not None:
        return f"row {int(indices[position])}"
    return f"row {position} of this batch (map with with_indices=True to get dataset row numbers)"


def open_image_cell(value: dict, column: str, position: int, indices: Sequence[int] | None = None) -> PIL.Image.Image:
    """Open and load a raw {'bytes', 'path'} image cell, or raise a ProtectionError naming the row."""
    where = f"column {column!r}, {_row_name(position, indices)}"
    try:
        if value.get("bytes") is not None:
            img = PIL.Image.open(io.BytesIO(value["bytes"]))
        elif value.get("path"):
            img = PIL.Image.open(value["path"])
        else:
            raise ProtectionError(f"{where}: the image cell is empty (no bytes, no path). Drop or fix that row.")
        img.load()
    except ProtectionError:
        raise
    except Exception as exc:  # PIL raises many types for corrupt files
        raise ProtectionError(
            f"{where}: the image bytes cannot be decoded ({type(exc).__name__}: {exc}). "
            "Re-encode or drop that row, e.g. ds.filter(...) before protecting."
        ) from None
    return img


_EXIF_ORIENTATION = 0x0112
# Modes protected as they are: the noise goes on the colour (or gray) channels, alpha is kept byte for byte.
CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}
MODE_OF_CHANNELS = {c: m for m, c in CHANNELS.items()}
# Modes refused, each with advice that is right for it (never a cast that clips or drops data).
_MODE_ADVICE = {
    "P": "a palette image: convert it losslessly first, to 'RGBA' when the palette has transparency else 'RGB' "
         "(e.g. ds.cast_column({col!r}, datasets.Image(mode='RGB'))); the release is then that mode",
    "PA": "a palette image with alpha: convert it losslessly to 'RGBA' first "
          "(ds.cast_column({col!r}, datasets.Image(mode='RGBA')))",
    "1": "a 1-bit image: convert it losslessly to 'L' first (ds.cast_column({col!r}, datasets.Image(mode='L'))); "
         "note that noise makes it grayscale",
    "I;16": "a 16-bit image: protection works on 8-bit pixels. Scale it to 8 bits yourself (e.g. "
            "np.asarray(img) >> 8 for full-range data, or a window that suits your scans); do not cast with "
            "datasets.Image(mode='RGB'), which clips 16-bit values to white",
    "CMYK": "a CMYK image: convert it to 'RGB' first with your colour profile (PIL.ImageCms), or "
            "ds.cast_column({col!r}, datasets.Image(mode='RGB')) for PIL's plain conversion",
    "YCbCr": "a YCbCr image: convert it to 'RGB' first (ds.cast_column({col!r}, datasets.Image(mode='RGB')))",
}
for _m in ("I;16B", "I;16L", "I;16N", "I", "F"):
    _MODE_ADVICE[_m] = _MODE_ADVICE["I;16"].replace("a 16-bit image", f"a {_m!r} (16/32-bit) image")


def decode_image(value: Any, column: str, position: int, indices: Sequence[int] | None = None) -> np.ndarray:
    """Decode one cell of an image column to uint8 HxWxC (C: 1 'L', 2 'LA', 3 'RGB', 4 'RGBA'), or raise a
    ProtectionError naming the row (and, for a mode that cannot be protected as it is, the right conversion)."""
    where = f"column {column!r}, {_row_name(position, indices)}"
    if isinstance(value, PIL.Image.Image):
        img = value
    elif isinstance(value, dict) and ("bytes" in value or "path" in value):
        img = open_image_cell(value, column, position, indices)
    elif isinstance(value, np.ndarray):
        img = None
        arr = value[:, :, None] if value.ndim == 2 else value
    elif value is None:
        raise ProtectionError(f"{where}: the image is missing (None). Drop or fix that row.")
    else:
        raise ProtectionError(
            f"{where}: expected an image (PIL image or {{'bytes', 'path'}}), got {type(value).__name__}. If "
            "this is not the image column, name the right one with image_column=; if it is, cast it to images "
            "(ds.cast_column(..., datasets.Image()))."
        )
    if img is not None:
        if img.getexif().get(_EXIF_ORIENTATION, 1) != 1:
            # a photo stored sideways with an orientation tag: protect (and release) it as it is shown, since the
            # PNG written back has no tag to turn it
            img = PIL.ImageOps.exif_transpose(img)
        if img.mode not in CHANNELS:
            advice = _MODE_ADVICE.get(img.mode, "convert it to 'RGB', 'RGBA', 'L' or 'LA' first").format(col=column)
            raise ProtectionError(f"{where}: image mode {img.mode!r} cannot be protected as it is: {advice}.")
        arr = np.asarray(img)
        if arr.ndim == 2:
            arr = arr[:, :, None]
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] not in MODE_OF_CHANNELS:
        raise ProtectionError(
            f"{where}: expected a uint8 HxWxC image with 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA) channels, "
            f"got dtype {arr.dtype} and shape {arr.shape}. Convert it to an 8-bit image first."
        )
    if min(arr.shape[:2]) < 1:
        raise ProtectionError(f"{where}: the image has no pixels ({arr.shape[1]}x{arr.shape[0]}). Drop that row.")
    return np.ascontiguousarray(arr)


def decode_images(values: Sequence[Any], column: str, indices: Sequence[int] | None = None) -> list[np.ndarray]:
    return [decode_image(v, column, i, indices) for i, v in enumerate(values)]


def colour_channels(arr: np.ndarray) -> int:
    """How many leading channels carry the picture (1 gray, 3 RGB); the rest is alpha, never changed."""
    return 1 if arr.shape[2] <= 2 else 3


def encode_png(arr: np.ndarray) -> dict:
    """Encode a uint8 HxWxC array (in its own mode: L, LA, RGB or RGBA) as a datasets Image cell with fresh,
    lossless PNG bytes."""
    buf = io.BytesIO()
    mode = MODE_OF_CHANNELS[arr.shape[2]]
    PIL.Image.fromarray(arr[:, :, 0] if mode == "L" else arr, mode=mode).save(buf, format="PNG", compress_level=6)
    return {"bytes": buf.getvalue(), "path": None}


def png_image(cell: dict) -> PIL.Image.Image:
    """An encode_png cell as the PIL image datasets would decode it (loaded, format PNG): what a batch that arrived
    as images gets back."""
    image = PIL.Image.open(io.BytesIO(cell["bytes"]))
    image.load()
    return image


# ---------------------------------------------------------------------------------------------------------------
# Working resolution: methods and victims see every image as RGB at one size; noise comes back to each image's own
# size and channels. Resizing is the scraper's pipeline (squash to the size, antialiased bilinear).
# ---------------------------------------------------------------------------------------------------------------
DEFAULT_RESOLUTION = 32


def check_resolution(resolution: Any, name: str = "resolution") -> tuple[int, int] | None:
    """None, an int side or an (height, width) pair -> (h, w); anything else is a ProtectionError."""
    if resolution is None:
        return None
    pair = (resolution, resolution) if isinstance(resolution, (int, np.integer)) else resolution
    try:
        h, w = pair
        ok = all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and 8 <= v <= 4096
                 for v in (h, w))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ProtectionError(f"{name}={resolution!r} must be a side in pixels (an integer from 8 to 4096, e.g. 32: "
                              "images of at least 8x8) or a (height, width) pair: the size the noise is crafted, "
                              "surrogates and victims train at.")
    return int(h), int(w)


def working_size(resolution: Any) -> tuple[int, int]:
    """check_resolution, with None meaning the library's DEFAULT_RESOLUTION (victims, surrogates)."""
    return check_resolution(resolution) or (DEFAULT_RESOLUTION, DEFAULT_RESOLUTION)


def working_rgb(arr: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """An image's picture as uint8 HxWx3 at `size` (h, w): gray replicated, alpha left out, resized (antialiased
    bilinear) when its size differs."""
    rgb = arr[:, :, :3] if arr.shape[2] >= 3 else np.repeat(arr[:, :, :1], 3, axis=2)
    if size is None or tuple(rgb.shape[:2]) == tuple(size):
        return np.ascontiguousarray(rgb)
    img = PIL.Image.fromarray(np.ascontiguousarray(rgb), mode="RGB")
    return np.asarray(img.resize((size[1], size[0]), PIL.Image.BILINEAR))


def fit_steps(delta: np.ndarray, shape: tuple, k: int) -> np.ndarray:
    """Noise in pixel units (HxWx3 at the working size, float) as whole uint8 steps for an image of `shape`
    (h, w, C): averaged over colour for gray images, rounded and kept within +-k steps at the working size, then
    resized to the image's own size by nearest neighbour (each working pixel becomes a block: the pattern keeps its
    full strength, where bilinear interpolation averages neighbouring signs away, 35 % of it on sign-like noise).
    int16 h x w x C' (C' = 1 or 3)."""
    d = np.asarray(delta)
    if shape[2] <= 2 and d.shape[2] != 1:
        d = d.astype(np.float64).mean(axis=2, keepdims=True)
    steps = np.clip(np.rint(d.astype(np.float64) * 255.0), -k, k).astype(np.int16)
    return resize_steps(steps, shape)


def resize_steps(steps: np.ndarray, shape: tuple) -> np.ndarray:
    """Whole steps (int, h0 x w0 x C) for an image of `shape` (h, w, C'): gray images take the rounded colour
    average, and the steps are resized by nearest neighbour (index arrays: no float copy of a large image)."""
    h, w, c = shape
    if c <= 2 and steps.shape[2] != 1:
        steps = np.rint(steps.astype(np.float64).mean(axis=2, keepdims=True))
    steps = steps.astype(np.int16, copy=False)
    h0, w0 = steps.shape[:2]
    if (h0, w0) == (h, w):
        return steps
    return steps[nearest_index(h, h0)][:, nearest_index(w, w0)]


def nearest_index(size: int, source: int) -> np.ndarray:
    """For each of `size` output pixels, the source pixel (of `source`) whose centre is nearest: floor((i + 0.5) *
    source / size) ("nearest-exact"), in exact integers (index arrays: no float copy of a large image)."""
    return (2 * np.arange(size, dtype=np.int64) + 1) * source // (2 * size)


def add_steps(image: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """The image with whole steps added to its colour channels (clipped to [0, 255]); alpha kept as it is."""
    out = image.copy()
    c = colour_channels(image)
    moved = image[:, :, :c].astype(np.int16)
    moved += steps
    np.clip(moved, 0, 255, out=moved)
    out[:, :, :c] = moved
    return out


def row_id(arr: np.ndarray) -> str:
    """Stable content id of an original image: the hash of its decoded pixels and shape.

    Pixels rather than file bytes, so a lossless re-encode of the same image keeps its id.
    """
    h = hashlib.blake2b(digest_size=10)
    h.update(repr(arr.shape).encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def to_tensor(images: np.ndarray | list[np.ndarray]):
    """uint8 NHWC (array or list of equal-shape arrays) -> float32 NCHW in [0, 1]."""
    import torch

    arr = np.stack(images) if isinstance(images, list) else images
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float().div_(255.0)


def group_by_shape(images: Sequence[np.ndarray]) -> dict[tuple, list[int]]:
    """Positions of the batch grouped by image shape, so batch methods see stackable groups."""
    groups: dict[tuple, list[int]] = {}
    for i, a in enumerate(images):
        groups.setdefault(a.shape, []).append(i)
    return groups


def row_rng(seed: int, rid: str) -> np.random.Generator:
    """A random generator seeded by (seed, row id): output bytes then do not depend on batching or num_proc."""
    digest = hashlib.blake2b(rid.encode("utf-8"), digest_size=8).digest()
    return np.random.default_rng([int(seed), int.from_bytes(digest, "little")])
