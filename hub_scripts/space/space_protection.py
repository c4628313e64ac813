"""The protection itself: read an upload, protect it with one call of the library's transform, measure it and write
the results. No gradio here: the tests call these directly, app.py from its Protect button."""

from __future__ import annotations

import io
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import PIL.Image
import PIL.ImageOps

from hf_unlearnable import ProtectionError, protect
from hf_unlearnable._norms import describe, measure
from space_catalogue import EPS_DEFAULT, EPS_MAX, EPS_MIN, SEED, Choice, Limits

# Modes the library protects as they are (alpha byte for byte, gray stays gray); the others are converted first.
_KEPT_MODES = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}
_MODE_OF_CHANNELS = {c: m for m, c in _KEPT_MODES.items()}
# 8-bit modes converted without loss beyond what the mode holds: (target mode, note); palette modes are handled
# by whether they carry transparency.
_CONVERSIONS = {
    "1": ("L", "converted from 1-bit to 8-bit grey (mode L); the noise makes it greyscale"),
    "La": ("LA", None),          # premultiplied alpha -> straight alpha, the same picture
    "RGBa": ("RGBA", None),
    "RGBX": ("RGB", None),
    "CMYK": ("RGB", "converted from mode CMYK to RGB"),
    "YCbCr": ("RGB", "converted from mode YCbCr to RGB"),
    "LAB": ("RGB", "converted from mode LAB to RGB"),
    "HSV": ("RGB", "converted from mode HSV to RGB"),
}


def read_image(path: str | os.PathLike, limits: Limits, uses_network: bool = False) -> tuple[np.ndarray, list[str]]:
    """Decode an upload to uint8 HxWxC in a mode the library keeps (C: 1 'L', 2 'LA', 3 'RGB', 4 'RGBA'; alpha is
    kept, gray stays gray), refusing what is too large *before* decoding it. Returns (pixels, notes)."""
    notes: list[str] = []
    try:
        with PIL.Image.open(path) as im:          # reads the header only
            w, h = im.size
            _check_size(w, h, limits, uses_network)
            if im.mode not in _KEPT_MODES and im.mode not in _CONVERSIONS and im.mode not in ("P", "PA"):
                raise ProtectionError(
                    f"the image is in mode {im.mode!r} (16-bit or floating point); this Space protects 8-bit "
                    "images. Export it as an 8-bit PNG or JPEG first.")
            if getattr(im, "n_frames", 1) > 1:
                notes.append(f"only the first of {im.n_frames} frames was protected")
            im.load()
            if im.getexif().get(0x0112, 1) != 1:  # EXIF orientation: protect the picture as the browser shows it
                im = PIL.ImageOps.exif_transpose(im)
                notes.append("rotated upright as its EXIF orientation says")
            if im.mode in ("P", "PA"):            # a palette: its colours, losslessly, with alpha when it has any
                target = "RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB"
                notes.append(f"converted from a palette to {target} (lossless; noise needs more than the palette's "
                             "colours)")
                im = im.convert(target)
            elif im.mode in _CONVERSIONS:
                target, note = _CONVERSIONS[im.mode]
                if note:
                    notes.append(note)
                im = im.convert(target)
            arr = np.asarray(im, dtype=np.uint8)
            arr = (arr[:, :, None] if arr.ndim == 2 else arr).copy()
    except PIL.Image.DecompressionBombError:
        raise ProtectionError(f"the image is far larger than this Space's limit of {_mp(limits.max_pixels)}; "
                              "downscale it first.") from None
    except PIL.UnidentifiedImageError:
        raise ProtectionError("the upload is not an image this Space can read; use PNG, JPEG, WebP, GIF, BMP "
                              "or TIFF.") from None
    except OSError as exc:
        raise ProtectionError(f"the image cannot be decoded ({exc}); it may be truncated. Re-save it and try "
                              "again.") from None
    return arr, notes


def _mp(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} MP" if pixels >= 100_000 else f"{pixels:,} pixels"


def _check_size(w: int, h: int, limits: Limits, uses_network: bool) -> None:
    if w * h > limits.max_pixels:
        raise ProtectionError(
            f"the image is {w}x{h} = {_mp(w * h)}; this Space protects at most {_mp(limits.max_pixels)}. "
            "Downscale it first (a model sees far fewer pixels anyway).")
    if uses_network and w * h > limits.network_pixels:
        raise ProtectionError(
            f"the image is {w}x{h} = {_mp(w * h)}; this Space runs methods that use a network on up to "
            f"{_mp(limits.network_pixels)}. Downscale the image, or choose 'random' or a class-wise noise bank "
            f"(up to {_mp(limits.max_pixels)}).")


def _class_index(choice: Choice, label: str | int | None) -> int | None:
    if choice.class_names is None:
        return None
    if label is None or label == "":
        raise ProtectionError(f"{choice.key!r} needs the class of the picture: pick one of {choice.class_names}.")
    if isinstance(label, str) and label in choice.class_names:
        return choice.class_names.index(label)
    if isinstance(label, (int, np.integer)) or (isinstance(label, str) and label.isdigit()):
        k = int(label)
        if 0 <= k < len(choice.class_names):
            return k
    raise ProtectionError(f"class {label!r} is not one of {choice.key!r}'s classes: {choice.class_names}.")


def _check_epsilon_steps(epsilon_steps) -> int:
    if not isinstance(epsilon_steps, (int, np.integer, float)) or isinstance(epsilon_steps, bool) \
            or not EPS_MIN <= float(epsilon_steps) <= EPS_MAX or float(epsilon_steps) != int(epsilon_steps):
        raise ProtectionError(f"epsilon={epsilon_steps!r}: choose a whole number of /255 steps from {EPS_MIN} "
                              f"to {EPS_MAX}.")
    return int(epsilon_steps)


# The library names the row of the batch in its errors; here the batch is the one picture.
_ROW_PREFIX = re.compile(r"^column 'image', row 0 of this batch: ")


def protect_png(image: np.ndarray, choice: Choice, label: str | int | None, epsilon_steps: int,
                limits: Limits | None = None) -> bytes:
    """Protect one uint8 HxWxC picture (C: 1, 2, 3 or 4) with one call of the library's transform on a one-row
    batch, as `Dataset.map` calls it: the library works at the method's resolution and brings the noise to the
    picture's own size, checks the budget, rounds to uint8 and encodes the PNG. Returns the PNG's bytes."""
    k = _check_epsilon_steps(epsilon_steps)
    limits = limits or Limits()
    h, w = image.shape[:2]
    _check_size(w, h, limits, choice.uses_network)
    y = _class_index(choice, label)
    label_column = "label" if y is not None else None
    if choice.noise is not None:
        transform = protect(noise=choice.noise, epsilon=k / 255, image_column="image", label_column=label_column)
    else:
        transform = protect(method=choice.method, epsilon=k / 255 if choice.norm == "linf" else None, seed=SEED,
                            image_column="image", label_column=label_column)
    batch = {"image": [image]}
    if y is not None:
        batch["label"] = [y]         # the class index in the choice's own class names (the bank's, the surrogate's)
    try:
        (cell,) = transform(batch)["image"]
    except ProtectionError as exc:
        raise ProtectionError(_ROW_PREFIX.sub("", str(exc))) from None
    return cell["bytes"]


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> uint8 HxWxC as read_image returns it (C = 1 for gray)."""
    with PIL.Image.open(io.BytesIO(data)) as png:
        arr = np.asarray(png)
    return arr[:, :, None] if arr.ndim == 2 else arr


def protect_array(image: np.ndarray, choice: Choice, label: str | int | None, epsilon_steps: int,
                  limits: Limits | None = None) -> np.ndarray:
    """protect_png, decoded: the protected pixels, in the picture's own size and mode."""
    return decode_png(protect_png(image, choice, label, epsilon_steps, limits))


_ROWS = 256   # rows per chunk in the full-image measurements: no full-size int64/float64 temporaries


def _colour(arr: np.ndarray) -> np.ndarray:
    """The channels that carry the picture (gray or RGB); alpha is never changed, so it is left out of the measures."""
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return arr[:, :, :1] if arr.shape[2] <= 2 else arr[:, :, :3]


def linf_steps(original: np.ndarray, protected: np.ndarray) -> int:
    return _compare(original, protected)[0]


def psnr_db(original: np.ndarray, protected: np.ndarray) -> float:
    """Peak signal-to-noise ratio of 8-bit images in dB over the colour (or gray) channels (inf when identical)."""
    return _compare(original, protected)[1]


def _compare(original: np.ndarray, protected: np.ndarray) -> tuple[int, float]:
    """(max |x' - x| in /255 steps, PSNR in dB) over the colour channels, in row chunks."""
    original, protected = _colour(original), _colour(protected)
    linf, sse = 0, 0
    for r in range(0, original.shape[0], _ROWS):
        d = protected[r:r + _ROWS].astype(np.int32) - original[r:r + _ROWS]
        linf = max(linf, int(np.abs(d).max(initial=0)))
        sse += int(np.einsum("ijk,ijk->", d, d, dtype=np.int64))
    mse = sse / max(original.size, 1)
    return linf, (math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse))


def noise_map(original: np.ndarray, protected: np.ndarray, epsilon_steps: int) -> np.ndarray:
    """The perturbation made visible: mid-grey is zero, +/- epsilon maps to the full 0..255 range. HxW for gray
    pictures, HxWx3 for colour ones (alpha, never changed, is left out)."""
    original, protected = _colour(original), _colour(protected)
    out = np.empty_like(original)
    for r in range(0, original.shape[0], _ROWS):
        delta = protected[r:r + _ROWS].astype(np.float32) - original[r:r + _ROWS]
        out[r:r + _ROWS] = np.clip(np.rint(127.5 + delta * (127.5 / epsilon_steps)), 0, 255)
    return out[:, :, 0] if out.shape[2] == 1 else out


def report_text(choice: Choice, label: str | None, epsilon_steps: int, original: np.ndarray,
                protected: np.ndarray, seconds: float, notes: Sequence[str] = ()) -> str:
    h, w = original.shape[:2]
    mode = _MODE_OF_CHANNELS[original.shape[2]]
    linf, psnr = _compare(original, protected)
    lines = [f"method: {choice.key}" + (f" · class: {label}" if choice.class_names is not None else ""),
             f"image: {w}x{h} px, {mode}" + (" (alpha kept as it was)" if mode in ("LA", "RGBA") else "")
             + f", {seconds:.1f} s"]
    if choice.resolution is not None and choice.resolution != (h, w):
        rh, rw = choice.resolution
        made = ("the bank's patterns were crafted at" if choice.noise is not None
                else "the noise was made at")
        lines.append(f"noise: {made} {rw}x{rh}" + (" (the network's input size)" if choice.uses_network else "")
                     + f" and resized to {w}x{h} (nearest neighbour: whole steps, full strength, within ε)")
    if choice.norm == "linf":
        lines.append(f"budget: ε={epsilon_steps}/255" + (" (the noise bank's own)" if choice.noise is not None else ""))
    else:
        lines.append(f"budget: {describe(choice.norm, choice.budget)}, the method's own (the ε slider sets L∞ "
                     "budgets only)")
    lines += [f"measured: max|δ|={linf}/255 (L∞), " + _other_norm(choice.norm, original, protected)
              + f"PSNR={'inf' if math.isinf(psnr) else f'{psnr:.2f}'} dB",
              "download: lossless PNG (re-saving it as JPEG or WebP changes the pixels and weakens the protection)"]
    lines += [f"note: {n}" for n in notes]
    return "\n".join(lines)


def _other_norm(norm: str, original: np.ndarray, protected: np.ndarray) -> str:
    """The change in the method's own norm (the library's measure), when it is not L-inf ([0, 1] pixel units for
    L2, as the budget)."""
    if norm == "linf":
        return ""
    size = measure(norm, _colour(protected).astype(np.int32) - _colour(original))
    return f"L2={size / 255:.3f}, " if norm == "l2" else f"changed pixels={int(size)} (L0), "


@dataclass
class Result:
    png_path: Path          # the protected image, lossless PNG in the upload's mode (shown and offered for download)
    map_path: Path          # the amplified noise map
    report: str
    linf: int               # measured max |x' - x|, in /255 steps
    psnr: float


def protect_upload(image_path: str | os.PathLike, choice: Choice, label: str | int | None,
                   epsilon: int | float | None, out_dir: str | os.PathLike, limits: Limits | None = None) -> Result:
    """What the Protect button does: read, protect, measure, and write the PNG and the noise map to out_dir."""
    limits = limits or Limits()
    if epsilon is None:
        epsilon = choice.fixed_epsilon or EPS_DEFAULT
    t0 = time.perf_counter()
    original, notes = read_image(image_path, limits, choice.uses_network)
    png = protect_png(original, choice, label, epsilon, limits)
    protected = decode_png(png)
    seconds = time.perf_counter() - t0
    # A noise bank keeps its own budget: a larger epsilon does not make its whole steps any larger.
    budget = choice.fixed_epsilon or int(epsilon)
    if choice.fixed_epsilon is not None and int(epsilon) != budget:
        notes.append(f"ε={int(epsilon)}/255 was asked for; the noise bank's own {budget}/255 applies")
    tag = f"eps{budget}"
    if choice.norm != "linf":      # its own budget in its own norm; the map spans the largest change made
        tag = f"{choice.norm}-{choice.budget:g}"
        budget = max(1, _compare(original, protected)[0])
    out_dir = Path(out_dir)
    key = re.sub(r"[^A-Za-z0-9]+", "-", choice.key).strip("-")
    png_path = out_dir / f"{_safe_stem(image_path)}_protected_{key}_{tag}.png"
    png_path.write_bytes(png)            # the library's own PNG, byte for byte
    del png
    map_path = out_dir / "noise_map.png"
    PIL.Image.fromarray(noise_map(original, protected, budget)).save(map_path, format="PNG", compress_level=1)
    text = report_text(choice, label, budget, original, protected, seconds, notes)
    linf, psnr = _compare(original, protected)
    return Result(png_path, map_path, text, linf, psnr)


def _safe_stem(path: str | os.PathLike | None) -> str:
    stem = Path(str(path or "image")).stem
    return re.sub(r"[^A-Za-z0-9_-]+", "_", stem)[:60].strip("_") or "image"
