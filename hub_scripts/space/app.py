"""Gradio Space: protect one picture in the browser with hf_unlearnable.

Upload an image, pick a method, choose epsilon (1-16 /255), press Protect: the page shows the protected image, an
amplified noise map, the measured L-inf and PSNR, and offers the result as a lossless PNG. Methods whose budget is
another norm (ar and lsp: L2, ops: L0) use their own default budget; the slider, an L-inf budget, is off for them.

    python hub_scripts/space/app.py                          # http://127.0.0.1:7860
    python hub_scripts/space/app.py --noise noise/em-cw      # also offer a class-wise noise bank (repeatable)
    HF_UNLEARNABLE_SPACE_NOISE="user/em-cifar10,noise/pue" python app.py   # the same through an env variable

On a Space, the noise banks are the repos in README.md's `models:` list (deploy.py --noise writes it).

Methods offered: every registered method with a per-batch form (`hf_unlearnable.methods.METHODS`, `per_batch`)
that can protect a single image, plus the class-wise noise banks (README `models:`, --noise, the env variable),
applied by the class the user picks (the bank's own class names; a label-agnostic bank picks its nearest cluster
itself). Protection is one call of the library's own transform (`protect(...)`) on a one-row batch holding the whole
picture, as `Dataset.map` calls it: the library works at the method's resolution, brings the noise to the
picture's own size, checks the budget, rounds to uint8 and encodes the PNG, and the download is that PNG, byte for
byte. The picture keeps its size and mode as the library keeps them: RGB, RGBA (alpha byte for byte), L and LA
(grey stays grey). Palette images become RGB, or RGBA when they have transparency (lossless); 1-bit becomes L,
CMYK / YCbCr / LAB / HSV become RGB, each with a note in the report; 16-bit and floating-point images are refused.

Sizes: methods that run a network (em) craft their noise at the network's input size (32 x 32 for the bundled
CIFAR-10 surrogate) and the library resizes it to the picture (nearest neighbour: whole uint8 steps at full
strength, so the epsilon bound is exact); class-wise banks are resized from the size they were crafted at the same
way. So em's cost no longer grows with the picture; only decoding, applying the noise and encoding do, and those
cost the same for every method. Images above --max-pixels (24 MP, e.g. 6000 x 4000) are refused before they are
decoded; --max-network-pixels can set a lower limit for methods that run a network, but by default it is the same
limit, because em now costs what random costs. Measured on this project's 2-core machine (one torch thread,
another job running beside it, so the seconds are rough), a fresh process per run, with the upload, protection,
both PNGs and the measurements, as peak RSS above the warmed-up process:

    picture          method   now (one call of the library)   before (tiles: 512 x 512, em 32 x 32)
    1024 x 1024      em        0.4 s,    +69 MiB               20 s,  +200 MiB
    1920 x 1080      em        0.9 s,   +144 MiB               52 s,  +224 MiB
    4000 x 3000      em        4.6 s,   +790 MiB               refused (above 2.1 MP; ~5 min at 25 s/MP, extrapolated)
    4000 x 3000      random    6.7 s,   +824 MiB               7.1 s, +148 MiB
    4000 x 3000      bank      4.7 s,   +789 MiB               2.4 s, +149 MiB
    6000 x 4000      em       11.4 s,  +1580 MiB               refused
    6000 x 4000      random   17.3 s,  +1648 MiB               15 s,  +297 MiB
    6000 x 4000      bank      6.0 s,  +1579 MiB               (not measured)

em now perturbs 99.9 % of the pixels of a 4000 x 3000 photo (tiles: 99.98 %). Memory grows with the picture
(about 66 bytes per pixel, most of it inside the library's transform, which works on the whole picture: float
noise at full size, the int16 sum, the budget check), where tiles kept it nearly flat; at the 24 MP limit a request
peaks at about 2 GiB RSS, well inside cpu-basic's 16 GB, and the page runs one request at a time.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

# Before gradio / huggingface_hub are imported (both read these at import): no analytics, no telemetry calls.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import PIL.ImageOps  # noqa: E402

try:
    from hf_unlearnable import Noise, ProtectionError, load_noise, protect  # noqa: E402
    from hf_unlearnable._norms import describe, measure  # noqa: E402
    from hf_unlearnable.methods import METHODS  # noqa: E402
except ImportError as exc:  # pragma: no cover - a deployment mistake, not a code path
    raise SystemExit(f"hf_unlearnable is not importable ({exc}). Install it (pip install -e . in a checkout), or "
                     "deploy the Space with hub_scripts/space/deploy.py, which uploads the package beside app.py.")

NOISE_ENV = "HF_UNLEARNABLE_SPACE_NOISE"        # comma- or newline-separated noise bank folders / Hub repo ids
MAX_PIXELS = 24_000_000                         # any method: 24 MP, e.g. 6000 x 4000 (~2 GiB peak RSS, measured)
EPS_MIN, EPS_MAX, EPS_DEFAULT = 1, 16, 8        # the slider, in /255 steps
SEED = 0
OUTPUT_MAX_AGE_S = 3600                         # our result files are deleted after an hour (privacy, disk)

_DESCRIPTIONS = {
    "random": "uniform random noise in the epsilon box: the baseline that shows what epsilon alone does; it does "
              "not protect anything.",
    "em": "error-minimising noise (Huang et al., ICLR 2021) against the bundled CIFAR-10 surrogate: gradient steps "
          "that make the picture look 'already learned' for the class you pick. It runs the network at its 32x32 "
          "input size; the library resizes the noise to your picture.",
}


# ---------------------------------------------------------------------------------------------------------------
# What the page offers
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Limits:
    """Size limits, in pixels (width x height)."""

    max_pixels: int = MAX_PIXELS
    # Methods that run a network: None = max_pixels. The library crafts their noise at the network's input size, so
    # they cost what any method costs on a large picture (module docstring); an operator may still set it lower.
    max_network_pixels: int | None = None

    @property
    def network_pixels(self) -> int:
        return self.max_pixels if self.max_network_pixels is None else min(self.max_network_pixels, self.max_pixels)


@dataclass
class Choice:
    """One entry of the method dropdown: a per-batch method, or a class-wise noise bank."""

    key: str                                  # what the dropdown shows and the API takes
    description: str
    method: str | None = None                 # a per-batch method's registry name
    noise: Noise | None = None                # a class-wise noise bank
    class_names: list[str] | None = None      # None: the choice needs no label
    uses_network: bool = False                # works at a network's input size (the library's working resolution)
    resolution: tuple[int, int] | None = None  # (h, w) the noise is made at and resized from; None: the picture's
    norm: str = "linf"                        # the norm of the method's budget; not L-inf: its default budget ...
    budget: float | None = None               # ... this one (the slider sets L-inf budgets only)

    @property
    def fixed_epsilon(self) -> int | None:
        """A noise bank carries its own budget (in /255 steps); per-batch methods take the slider's."""
        return None if self.noise is None else _levels(self.noise.epsilon)


@dataclass
class Catalogue:
    choices: dict[str, Choice] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)     # what could not be offered, and why


def _levels(epsilon: float) -> int:
    return int(math.floor(float(epsilon) * 255 + 1e-6))


def _method_description(name: str, cls) -> str:
    if name in _DESCRIPTIONS:
        return _DESCRIPTIONS[name]
    doc = (sys.modules[cls.__module__].__doc__ or cls.__doc__ or name).strip().split("\n\n")[0]
    return " ".join(doc.split())


def _class_names_of(method) -> list[str]:
    surrogate_config = getattr(getattr(method, "surrogate", None), "config", None)
    names = getattr(surrogate_config, "class_names", None)
    if names:
        return list(names)
    if hasattr(method, "num_classes"):
        return [str(k) for k in range(int(method.num_classes))]
    from hf_unlearnable.surrogates import load_surrogate   # any class index works (ar, lsp, ops): offer the ten
                                                           # classes that rows without labels get, the surrogate's
    return list(load_surrogate(None).config.class_names)


def _working_resolution(method) -> tuple[int, int] | None:
    """The size (h, w) the library runs the method at (its surrogate's input size, 32x32 for the bundled CIFAR-10
    one) and resizes the noise from; None for a method that works at each picture's own size (random)."""
    if not type(method).uses_resolution:
        return None
    return tuple(int(v) for v in method.working_resolution())


def _probe(name: str, cls) -> str | None:
    """Why this per-batch method cannot protect one lone image (e.g. it needs several classes per batch), or None."""
    rng = np.random.default_rng(0)
    batch = {"image": [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)], "label": [0]}
    try:
        transform = protect(method=name, epsilon=EPS_DEFAULT / 255 if cls.norm == "linf" else None, seed=SEED,
                            image_column="image",
                            label_column="label" if cls.uses_labels else None)
        transform(batch if cls.uses_labels else {"image": batch["image"]})
    except ProtectionError as exc:
        return str(exc)
    return None


def noise_specs_from_env(value: str | None) -> list[str]:
    """The noise banks named in HF_UNLEARNABLE_SPACE_NOISE: comma- or newline-separated folders or repo ids."""
    return [s.strip() for s in re.split(r"[,\n]", value or "") if s.strip()]


def noise_specs_from_readme(readme: str | os.PathLike) -> list[str]:
    """The Hub repos in the Space card's `models:` list: the noise banks a deployed Space offers (deploy.py --noise
    writes them there, with `preload_from_hub`, so the Hub links them and caches them at build time)."""
    path = Path(readme)
    if not path.is_file():
        return []
    from huggingface_hub import SpaceCard

    models = SpaceCard.load(path).data.to_dict().get("models") or []
    return [models] if isinstance(models, str) else [str(m) for m in models]


def build_catalogue(noise_specs: Sequence[str] = ()) -> Catalogue:
    """Per-batch methods from the registry (those that can protect a single image) and the class-wise banks."""
    cat = Catalogue()
    # L-inf methods first (the slider is theirs), then those with a budget of their own
    for name, cls in sorted(METHODS.items(), key=lambda item: (item[1].norm != "linf", item[0])):
        if not cls.per_batch:
            continue  # crafted over a whole dataset only (e.g. pue): offered through its noise banks instead
        why = _probe(name, cls)
        if why is not None:
            first_sentence = why.split(". ")[0].rstrip(".")
            cat.problems.append(f"method {name!r} is not offered: it cannot protect a single image ({first_sentence})")
            continue
        method = cls(cls.config_class.from_options(name))
        resolution = _working_resolution(method)
        description = _method_description(name, cls)
        own = None if cls.norm == "linf" else method.config.epsilon
        if own is not None:
            description += f" Its budget is {describe(cls.norm, own)}, the method's own: the ε slider does not apply."
        cat.choices[name] = Choice(
            key=name, description=description, method=name,
            class_names=_class_names_of(method) if cls.uses_labels else None, uses_network=resolution is not None,
            resolution=resolution, norm=cls.norm, budget=own)
    for spec in noise_specs:
        try:
            noise = load_noise(spec)
        except (ProtectionError, OSError, ValueError) as exc:
            cat.problems.append(f"noise bank {spec!r} could not be loaded: {exc}")
            continue
        if noise.kind != "classwise":
            cat.problems.append(
                f"noise bank {spec!r} is {noise.kind} noise, keyed by the rows it was crafted for: it cannot protect "
                "a new picture. Use a class-wise bank (craft(ds, 'em', mode='classwise')).")
            continue
        # a local folder by its name, a Hub repo by its id
        key = f"{noise.method} class-wise: {Path(spec).name if Path(spec).exists() else spec}"
        h, w = noise.resolution
        if noise.centroids is not None:   # label-agnostic: the library picks each picture's nearest cluster
            names = None
            how = "one pattern per cluster of pictures, the nearest cluster's applied (no class to pick)"
        else:
            names = list(noise.config.class_names or [str(k) for k in range(len(noise))])
            how = "one pattern per class, the class you pick"
        cat.choices[key] = Choice(
            key=key, noise=noise, class_names=names, resolution=(h, w),
            description=(f"a crafted class-wise {noise.method} noise bank ({spec}, {w}x{h} patterns, "
                         f"{noise.config.epsilon_255}): {how}, resized to your picture by the library. Fast."))
    return cat


# ---------------------------------------------------------------------------------------------------------------
# The protection itself (no gradio here: the tests call these directly)
# ---------------------------------------------------------------------------------------------------------------
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


class _Outputs:
    """Result files live in one private temp folder; folders older than OUTPUT_MAX_AGE_S are removed."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="hf-unlearnable-space-"))

    def new_dir(self) -> Path:
        now = time.time()
        for old in self.root.iterdir():
            try:
                if now - old.stat().st_mtime > OUTPUT_MAX_AGE_S:
                    shutil.rmtree(old, ignore_errors=True)
            except OSError:
                pass
        return Path(tempfile.mkdtemp(dir=self.root))


# ---------------------------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------------------------
def build_demo(catalogue: Catalogue, limits: Limits | None = None):
    import gradio as gr

    limits = limits or Limits()
    if not catalogue.choices:
        raise SystemExit("nothing to offer: no per-batch method and no class-wise noise bank; see: "
                         + "; ".join(catalogue.problems))
    outputs = _Outputs()
    keys = list(catalogue.choices)
    first = catalogue.choices[keys[0]]

    def on_choice(key: str):
        ch = catalogue.choices[key]
        names = ch.class_names or []
        label_update = gr.update(choices=names, value=(names[0] if names else None), visible=bool(names))
        if ch.fixed_epsilon is not None:
            eps_update = gr.update(value=ch.fixed_epsilon, interactive=False,
                                   info="fixed by the noise bank, which was crafted at this budget")
        elif ch.norm != "linf":
            eps_update = gr.update(interactive=False, info=f"not used: this method's budget is "
                                   f"{describe(ch.norm, ch.budget)}")
        else:
            eps_update = gr.update(interactive=True, info="the L∞ budget per pixel value, in /255 steps")
        return label_update, eps_update, f"**{key}**: {ch.description}"

    def run(image_path, key, label, epsilon, progress=gr.Progress()):
        if image_path is None:
            raise gr.Error("Upload an image first.")
        if key not in catalogue.choices:
            raise gr.Error(f"unknown method {key!r}; choose one of {keys}.")
        progress(0, desc="protecting")
        try:
            result = protect_upload(image_path, catalogue.choices[key], label, epsilon, outputs.new_dir(), limits)
        except ProtectionError as exc:
            raise gr.Error(str(exc)) from None
        except MemoryError:
            raise gr.Error("the server ran out of memory on this image; downscale it and try again.") from None
        return str(result.png_path), str(result.map_path), result.report, str(result.png_path)

    intro = (
        "# Protect a picture with hf_unlearnable\n"
        "Adds a small, bounded perturbation (at most ε per pixel value) chosen so that a model trained on the "
        "picture learns the noise instead of the content. Upload, pick a method, press **Protect**, download the "
        "**PNG** (JPEG or WebP would change the pixels). This is a demonstration: the protection is measured on "
        "datasets (see the library's README), and a single protected picture proves nothing on its own.")
    network_limit = ("" if limits.network_pixels >= limits.max_pixels
                     else f" ({_mp(limits.network_pixels)} for methods that run a network)")
    limits_text = (
        f"Limits: up to {_mp(limits.max_pixels)} per image{network_limit}. The whole picture is protected in one "
        f"call of the library, in its own size and mode (RGBA keeps its alpha, grey stays grey); methods that run a "
        f"network make their noise at the network's input size and the library resizes it to your picture. "
        f"Uploads and results are kept only in this server's temporary folders and removed after an hour.")
    if catalogue.problems:
        limits_text += "\n\nNot offered here: " + " · ".join(catalogue.problems)

    with gr.Blocks(title="hf_unlearnable: protect an image", delete_cache=(OUTPUT_MAX_AGE_S, OUTPUT_MAX_AGE_S)) as demo:
        gr.Markdown(intro)
        with gr.Row():
            with gr.Column():
                inp = gr.Image(label="Your image", type="filepath", image_mode=None, format="png",
                               sources=["upload"], height=320, elem_id="inp")
                method = gr.Dropdown(keys, value=keys[0], label="Method", elem_id="method")
                info = gr.Markdown(f"**{keys[0]}**: {first.description}", elem_id="method-info")
                label = gr.Dropdown(first.class_names or [], value=(first.class_names or [None])[0],
                                    label="Class of the picture", visible=first.class_names is not None,
                                    allow_custom_value=True,    # the API may name any choice's class; checked in run
                                    elem_id="label")
                eps = gr.Slider(EPS_MIN, EPS_MAX, value=first.fixed_epsilon or EPS_DEFAULT, step=1,
                                label="ε (/255)", interactive=first.fixed_epsilon is None and first.norm == "linf",
                                elem_id="eps")
                btn = gr.Button("Protect", variant="primary", elem_id="protect")
            with gr.Column():
                out_img = gr.Image(label="Protected image", format="png", interactive=False, height=320,
                                   elem_id="protected")
                out_map = gr.Image(label="Noise, amplified (grey = 0, black/white = ∓ε)", format="png",
                                   interactive=False, height=320, elem_id="noise")
                report = gr.Textbox(label="Report", lines=7, interactive=False, elem_id="report")
                dl = gr.File(label="Download the protected PNG", interactive=False, elem_id="dl")
        gr.Markdown(limits_text, elem_id="limits")
        method.change(on_choice, [method], [label, eps, info], api_visibility="private")
        btn.click(run, [inp, method, label, eps], [out_img, out_map, report, dl], api_name="protect")
    return demo


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=None,
                        help="port to serve on (default: $GRADIO_SERVER_PORT, else 7860 or the next free one)")
    parser.add_argument("--noise", action="append", default=[], metavar="PATH_OR_REPO",
                        help=f"a class-wise noise bank to offer (repeatable); also read from ${NOISE_ENV}")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS, help="largest image, in pixels")
    parser.add_argument("--max-network-pixels", type=int, default=None,
                        help="largest image for methods that run a network, in pixels (default: --max-pixels)")
    args = parser.parse_args(argv)
    specs = noise_specs_from_readme(Path(__file__).with_name("README.md"))
    specs += [s for s in noise_specs_from_env(os.environ.get(NOISE_ENV)) + list(args.noise) if s not in specs]
    catalogue = build_catalogue(specs)
    for problem in catalogue.problems:
        print(f"warning: {problem}", file=sys.stderr)
    demo = build_demo(catalogue, Limits(max_pixels=args.max_pixels, max_network_pixels=args.max_network_pixels))
    # Plain launch: Spaces sets GRADIO_SERVER_NAME=0.0.0.0 itself; locally Gradio binds 127.0.0.1.
    demo.queue(default_concurrency_limit=1).launch(server_port=args.port, show_error=True, max_file_size="100mb")


if __name__ == "__main__":
    main()
