"""Image plumbing shared by the transform, crafting and evaluation: decode, validate, quantise, encode, row ids.

Everything here speaks uint8 HWC numpy arrays at the boundary and float [0, 1] NCHW torch tensors inside.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any, Sequence

import numpy as np
import PIL.Image

from .errors import ProtectionError

# Upper bound on epsilon: beyond a quarter of the pixel range a perturbation is no longer "small" and is almost
# certainly a unit mistake (8 instead of 8/255).
MAX_EPSILON = 64 / 255


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


def decode_image(value: Any, column: str, position: int, indices: Sequence[int] | None = None) -> np.ndarray:
    """Decode one cell of an image column to a uint8 HxWx3 array, or raise a ProtectionError naming the row."""
    where = f"column {column!r}, {_row_name(position, indices)}"
    if isinstance(value, PIL.Image.Image):
        img = value
    elif isinstance(value, dict) and ("bytes" in value or "path" in value):
        img = open_image_cell(value, column, position, indices)
    elif isinstance(value, np.ndarray):
        img = None
        arr = value
    elif value is None:
        raise ProtectionError(f"{where}: the image is missing (None). Drop or fix that row.")
    else:
        raise ProtectionError(
            f"{where}: expected an image (PIL image or {{'bytes', 'path'}}), got {type(value).__name__}. If "
            "this is not the image column, name the right one with image_column=; if it is, cast it to images "
            "(ds.cast_column(..., datasets.Image()))."
        )
    if img is not None:
        if img.mode != "RGB":
            raise ProtectionError(
                f"{where}: image mode is {img.mode!r}, but protection needs RGB. Convert first, e.g. "
                f"ds = ds.cast_column({column!r}, datasets.Image(mode='RGB'))."
            )
        arr = np.asarray(img)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ProtectionError(
            f"{where}: expected a uint8 HxWx3 RGB image, got dtype {arr.dtype} and shape {arr.shape}. "
            "Convert it to an 8-bit RGB image first."
        )
    return np.ascontiguousarray(arr)


def decode_images(values: Sequence[Any], column: str, indices: Sequence[int] | None = None) -> list[np.ndarray]:
    return [decode_image(v, column, i, indices) for i, v in enumerate(values)]


def encode_png(arr: np.ndarray) -> dict:
    """Encode a uint8 HxWx3 array as a datasets Image cell with fresh, lossless PNG bytes."""
    buf = io.BytesIO()
    PIL.Image.fromarray(arr, mode="RGB").save(buf, format="PNG", compress_level=6)
    return {"bytes": buf.getvalue(), "path": None}


def row_id(arr: np.ndarray) -> str:
    """Stable content id of an original image: the hash of its decoded pixels and shape.

    Pixels rather than file bytes, so a lossless re-encode of the same image keeps its id.
    """
    h = hashlib.blake2b(digest_size=10)
    h.update(repr(arr.shape).encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def apply_delta(images: np.ndarray, delta: np.ndarray, epsilon: float) -> np.ndarray:
    """x' = round(x + delta) in uint8 steps, inside the epsilon box and [0, 255].

    `delta` is in [0, 1] pixel units. Because x is already whole uint8 steps, rounding x + 255*delta equals
    x + round(255*delta): the result stays within floor(255*epsilon) steps of x *after* quantisation (methods.md
    §6.1: round, never truncate; §6.2: negative noise is kept).
    """
    k = epsilon_levels(epsilon)
    steps = np.clip(np.rint(np.asarray(delta, dtype=np.float64) * 255.0), -k, k)
    out = images.astype(np.int16) + steps.astype(np.int16)
    return np.clip(out, 0, 255).astype(np.uint8)


def apply_steps(images: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Add whole uint8 steps (already inside the budget) and clip to [0, 255]."""
    return np.clip(images.astype(np.int16) + steps.astype(np.int16), 0, 255).astype(np.uint8)


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
