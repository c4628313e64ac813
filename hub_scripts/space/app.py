"""Gradio Space: protect one picture in the browser with hf_unlearnable.

Upload an image, pick a method, choose epsilon (1-16 /255), press Protect: the page shows the protected image, an
amplified noise map, the measured L-inf and PSNR, and offers the result as a lossless PNG.

    python hub_scripts/space/app.py                          # http://127.0.0.1:7860
    python hub_scripts/space/app.py --noise noise/em-cw      # also offer a class-wise noise bank (repeatable)
    HF_UNLEARNABLE_SPACE_NOISE="user/em-cifar10,noise/pue" python app.py   # the same through an env variable

On a Space, the noise banks are the repos in README.md's `models:` list (deploy.py --noise writes it).

Methods offered: every registered method with a per-batch form (`hf_unlearnable.methods.METHODS`, `per_batch`)
that can protect a single image, plus the class-wise noise banks (README `models:`, --noise, the env variable),
applied by the class the user picks. Protection runs through the library's own transform (`protect(...)` called
on batches of tiles, as `Dataset.map` calls it), so the budget check, the uint8 rounding and the PNG encoding are
the library's.

Large images: the image is cut into tiles and stitched back, and each call of the transform gets at most 512 x 512
pixels, so memory does not grow with the image size. Methods that run a network get tiles of the network's own
input size (32 x 32 for the bundled CIFAR-10 surrogate), many per call: on a whole 256 x 256 picture the surrogate's
global max pooling passes gradient to only part of the pixels and em left 41 % of them untouched (measured), while
32 x 32 tiles perturb 99.7 % at about the same cost. Images above --max-pixels (24 MP) are refused before they are
decoded; methods that run a network (those with a `surrogate` option, e.g. em) are limited to
--max-network-pixels (2.1 MP, so Full HD 1920 x 1080 fits; em takes about 40 s per megapixel on one CPU core,
measured), with a message that says what to do instead. Measured on one core of the 2-core project machine, with
the upload, protection, both PNGs and the measurements: random on 4000 x 3000 in 12 s (+160 MiB peak RSS), a
class-wise bank on 4000 x 3000 in 9 s (+150 MiB), em on 1024 x 1024 in 43 s (+270 MiB; em on the whole
1024 x 1024 picture at once took +750 MiB, and would need about 9 GB at 4000 x 3000).
Class-wise noise crafted at another size (CIFAR-10 noise is 32 x 32) is stretched to the image by nearest
neighbour: every pixel gets one of the pattern's whole uint8 steps, so the epsilon bound stays exact, and a victim
that downsizes the picture to the pattern's size sees the crafted pattern again.
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
from typing import Callable, Sequence

# Before gradio / huggingface_hub are imported (both read these at import): no analytics, no telemetry calls.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import PIL.ImageOps  # noqa: E402

try:
    from hf_unlearnable import Noise, ProtectionError, load_noise, protect  # noqa: E402
    from hf_unlearnable.methods import METHODS  # noqa: E402
    from hf_unlearnable.noise import NoiseConfig  # noqa: E402
except ImportError as exc:  # pragma: no cover - a deployment mistake, not a code path
    raise SystemExit(f"hf_unlearnable is not importable ({exc}). Install it (pip install -e . in a checkout), or "
                     "deploy the Space with hub_scripts/space/deploy.py, which uploads the package beside app.py.")

NOISE_ENV = "HF_UNLEARNABLE_SPACE_NOISE"        # comma- or newline-separated noise bank folders / Hub repo ids
TILE = 512                                      # largest tile side: bounds memory whatever the image size
MAX_PIXELS = 24_000_000                         # any method: 24 MP, e.g. 6000 x 4000
MAX_NETWORK_PIXELS = 2_100_000                  # methods that run a network: em ~40 s per MP on 1 core (20 steps)
MIN_SIDE = 8                                    # the bundled ConvNet pools 3 times; smaller inputs vanish
EPS_MIN, EPS_MAX, EPS_DEFAULT = 1, 16, 8        # the slider, in /255 steps
SEED = 0
OUTPUT_MAX_AGE_S = 3600                         # our result files are deleted after an hour (privacy, disk)
# Ordinary 8-bit modes that convert to RGB without losing information beyond what the mode holds.
_CONVERTIBLE_MODES = {"1", "L", "P", "RGB", "RGBA", "LA", "PA", "La", "RGBa", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"}

_DESCRIPTIONS = {
    "random": "uniform random noise in the epsilon box: the baseline that shows what epsilon alone does; it does "
              "not protect anything.",
    "em": "error-minimising noise (Huang et al., ICLR 2021) against the bundled CIFAR-10 surrogate: gradient steps "
          "that make the picture look 'already learned' for the class you pick. Slower: it runs a network.",
}


# ---------------------------------------------------------------------------------------------------------------
# What the page offers
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Limits:
    """Size limits, in pixels (width x height)."""

    max_pixels: int = MAX_PIXELS
    max_network_pixels: int = MAX_NETWORK_PIXELS
    tile: int = TILE


@dataclass
class Choice:
    """One entry of the method dropdown: a per-batch method, or a class-wise noise bank."""

    key: str                                  # what the dropdown shows and the API takes
    description: str
    method: str | None = None                 # a per-batch method's registry name
    noise: Noise | None = None                # a class-wise noise bank
    class_names: list[str] | None = None      # None: the choice ignores the label
    uses_network: bool = False
    tile: int | None = None                   # tile side the method works at (a network's input size); None: any

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
    return [str(k) for k in range(int(method.num_classes))]


def _native_side(method) -> int | None:
    """The input size a method's surrogate network was trained at (32 for CIFAR-10), if it has one."""
    size = getattr(getattr(getattr(method, "surrogate", None), "config", None), "image_size", None)
    return int(max(size)) if size else None


def _probe(name: str, cls) -> str | None:
    """Why this per-batch method cannot protect one lone image (e.g. it needs several classes per batch), or None."""
    rng = np.random.default_rng(0)
    batch = {"image": [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)], "label": [0]}
    try:
        transform = protect(method=name, epsilon=EPS_DEFAULT / 255, seed=SEED, image_column="image",
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
    for name, cls in sorted(METHODS.items()):
        if not cls.per_batch:
            continue  # crafted over a whole dataset only (e.g. pue): offered through its noise banks instead
        why = _probe(name, cls)
        if why is not None:
            first_sentence = why.split(". ")[0].rstrip(".")
            cat.problems.append(f"method {name!r} is not offered: it cannot protect a single image ({first_sentence})")
            continue
        method = cls(cls.config_class.from_options(name))
        uses_network = "surrogate" in cls.config_class.__dataclass_fields__
        cat.choices[name] = Choice(
            key=name, description=_method_description(name, cls), method=name,
            class_names=_class_names_of(method) if cls.uses_labels else None, uses_network=uses_network,
            tile=_native_side(method) if uses_network else None)
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
        h, w = noise.config.image_shape[:2]
        names = list(noise.config.class_names or [str(k) for k in range(len(noise))])
        cat.choices[key] = Choice(
            key=key, noise=noise, class_names=names,
            description=(f"a crafted class-wise {noise.method} noise bank ({spec}, {w}x{h} patterns, "
                         f"{noise.config.epsilon_255}): one pattern per class, stretched to your picture. Fast."))
    return cat


# ---------------------------------------------------------------------------------------------------------------
# The protection itself (no gradio here: the tests call these directly)
# ---------------------------------------------------------------------------------------------------------------
def read_image(path: str | os.PathLike, limits: Limits, uses_network: bool = False) -> tuple[np.ndarray, list[str]]:
    """Decode an upload to uint8 HxWx3, refusing what is too large *before* decoding it. Returns (pixels, notes)."""
    notes: list[str] = []
    try:
        with PIL.Image.open(path) as im:          # reads the header only
            w, h = im.size
            _check_size(w, h, limits, uses_network)
            if im.mode not in _CONVERTIBLE_MODES:
                raise ProtectionError(
                    f"the image is in mode {im.mode!r} (16-bit or floating point); this Space protects 8-bit "
                    "images. Export it as an 8-bit PNG or JPEG first.")
            if getattr(im, "n_frames", 1) > 1:
                notes.append(f"only the first of {im.n_frames} frames was protected")
            im.load()
            if im.getexif().get(0x0112, 1) != 1:  # EXIF orientation: protect the picture as the browser shows it
                im = PIL.ImageOps.exif_transpose(im)
                notes.append("rotated upright as its EXIF orientation says")
            if im.mode in ("P", "PA") and ("transparency" in im.info or im.mode == "PA"):
                im = im.convert("RGBA")
            if im.mode in ("RGBA", "LA", "La", "RGBa"):
                rgba = im.convert("RGBA")
                if rgba.getextrema()[3][0] < 255:
                    flat = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                    flat.alpha_composite(rgba)
                    rgba = flat
                    notes.append("transparent pixels were flattened onto white (the PNG has no alpha)")
                im = rgba.convert("RGB")
            elif im.mode != "RGB":
                notes.append(f"converted from mode {im.mode} to RGB")
                im = im.convert("RGB")
            arr = np.asarray(im, dtype=np.uint8).copy()
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
    if min(w, h) < MIN_SIDE:
        raise ProtectionError(f"the image is {w}x{h} pixels; it must be at least {MIN_SIDE}x{MIN_SIDE}.")
    if w * h > limits.max_pixels:
        raise ProtectionError(
            f"the image is {w}x{h} = {_mp(w * h)}; this Space protects at most {_mp(limits.max_pixels)}. "
            "Downscale it first (a model sees far fewer pixels anyway).")
    if uses_network and w * h > limits.max_network_pixels:
        example = " (Full HD 1920x1080 fits)" if limits.max_network_pixels >= 1920 * 1080 else ""
        raise ProtectionError(
            f"the image is {w}x{h} = {_mp(w * h)}; this method runs gradient steps through a network, which this "
            f"Space allows up to {_mp(limits.max_network_pixels)}{example}, at about 40 s per megapixel on a CPU. "
            f"Downscale the image, or choose 'random' or a class-wise noise bank (up to {_mp(limits.max_pixels)}).")


def tile_boxes(height: int, width: int, tile: int = TILE) -> list[tuple[int, int, int, int]]:
    """Cut HxW into a grid of nearly equal tiles of at most `tile` per side: (y0, y1, x0, x1), row-major.

    Equal tiles rather than `tile`-sized ones plus a sliver, so no tile is thinner than half a tile (a 3-pixel
    sliver would vanish in the surrogate's pooling)."""
    ys = np.linspace(0, height, math.ceil(height / tile) + 1).round().astype(int)
    xs = np.linspace(0, width, math.ceil(width / tile) + 1).round().astype(int)
    return [(int(ys[i]), int(ys[i + 1]), int(xs[j]), int(xs[j + 1]))
            for i in range(len(ys) - 1) for j in range(len(xs) - 1)]


def stretch_pattern(pattern: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of a class pattern (whole uint8 steps) to HxW: values are copied, never mixed."""
    ph, pw = pattern.shape[:2]
    rows = (np.arange(height) * ph) // height
    cols = (np.arange(width) * pw) // width
    return pattern[rows][:, cols]


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


def protect_array(image: np.ndarray, choice: Choice, label: str | int | None, epsilon_steps: int,
                  limits: Limits | None = None, on_tile: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Protect one uint8 HxWx3 image tile by tile through the library's transform; returns the protected pixels."""
    if not isinstance(epsilon_steps, (int, np.integer, float)) or not EPS_MIN <= float(epsilon_steps) <= EPS_MAX \
            or float(epsilon_steps) != int(epsilon_steps):
        raise ProtectionError(f"epsilon={epsilon_steps!r}: choose a whole number of /255 steps from {EPS_MIN} "
                              f"to {EPS_MAX}.")
    k = int(epsilon_steps)
    limits = limits or Limits()
    h, w = image.shape[:2]
    _check_size(w, h, limits, choice.uses_network)
    y = _class_index(choice, label)
    if choice.noise is not None:
        full = stretch_pattern(choice.noise.steps[y], h, w)
    else:
        transform = protect(method=choice.method, epsilon=k / 255, seed=SEED, image_column="image",
                            label_column="label" if y is not None else None)
    out = np.empty_like(image)
    boxes = tile_boxes(h, w, choice.tile or limits.tile)
    done = 0
    for group in _call_groups(boxes, limits.tile ** 2 if choice.noise is None else 1):
        tiles = [np.ascontiguousarray(image[y0:y1, x0:x1]) for y0, y1, x0, x1 in group]
        batch = {"image": tiles}
        if choice.noise is not None:
            # The tile's share of the stretched pattern, as a one-class Noise: the library applies and checks it.
            ((y0, y1, x0, x1),) = group
            cfg = choice.noise.config
            tile_noise = Noise(full[None, y0:y1, x0:x1], NoiseConfig(
                method=cfg.method, kind="classwise", epsilon=cfg.epsilon, image_shape=[y1 - y0, x1 - x0, 3],
                num_classes=1, class_names=[choice.class_names[y]], seed=cfg.seed))
            transform = protect(noise=tile_noise, epsilon=k / 255, image_column="image", label_column="label")
            batch["label"] = [0]
        elif y is not None:
            batch["label"] = [y] * len(tiles)
        for (y0, y1, x0, x1), cell in zip(group, transform(batch)["image"]):
            with PIL.Image.open(io.BytesIO(cell["bytes"])) as png:
                out[y0:y1, x0:x1] = np.asarray(png.convert("RGB"))
        done += len(group)
        if on_tile is not None:
            on_tile(done, len(boxes))
    return out


def _call_groups(boxes: list[tuple[int, int, int, int]], max_pixels: int) -> list[list[tuple[int, int, int, int]]]:
    """Consecutive tiles grouped into transform calls of at most max_pixels (at least one tile each)."""
    groups: list[list] = [[]]
    pixels = 0
    for box in boxes:
        area = (box[1] - box[0]) * (box[3] - box[2])
        if groups[-1] and pixels + area > max_pixels:
            groups.append([])
            pixels = 0
        groups[-1].append(box)
        pixels += area
    return groups


def tile_count(choice: Choice, height: int, width: int, limits: Limits | None = None) -> int:
    return len(tile_boxes(height, width, choice.tile or (limits or Limits()).tile))


_ROWS = 256   # rows per chunk in the full-image measurements: no full-size int64/float64 temporaries


def linf_steps(original: np.ndarray, protected: np.ndarray) -> int:
    return _compare(original, protected)[0]


def psnr_db(original: np.ndarray, protected: np.ndarray) -> float:
    """Peak signal-to-noise ratio of 8-bit images in dB (inf when identical)."""
    return _compare(original, protected)[1]


def _compare(original: np.ndarray, protected: np.ndarray) -> tuple[int, float]:
    """(max |x' - x| in /255 steps, PSNR in dB), in row chunks."""
    linf, sse = 0, 0
    for r in range(0, original.shape[0], _ROWS):
        d = protected[r:r + _ROWS].astype(np.int32) - original[r:r + _ROWS]
        linf = max(linf, int(np.abs(d).max(initial=0)))
        sse += int(np.einsum("ijk,ijk->", d, d, dtype=np.int64))
    mse = sse / max(original.size, 1)
    return linf, (math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse))


def noise_map(original: np.ndarray, protected: np.ndarray, epsilon_steps: int) -> np.ndarray:
    """The perturbation made visible: mid-grey is zero, +/- epsilon maps to the full 0..255 range."""
    out = np.empty_like(original)
    for r in range(0, original.shape[0], _ROWS):
        delta = protected[r:r + _ROWS].astype(np.float32) - original[r:r + _ROWS]
        out[r:r + _ROWS] = np.clip(np.rint(127.5 + delta * (127.5 / epsilon_steps)), 0, 255)
    return out


def report_text(choice: Choice, label: str | None, epsilon_steps: int, original: np.ndarray,
                protected: np.ndarray, n_tiles: int, seconds: float, notes: Sequence[str] = ()) -> str:
    h, w = original.shape[:2]
    linf, psnr = _compare(original, protected)
    lines = [f"method: {choice.key}" + (f" · class: {label}" if choice.class_names is not None else ""),
             f"image: {w}x{h} px, {n_tiles} tile{'s' if n_tiles > 1 else ''}"
             + (f" of up to {choice.tile}x{choice.tile} (the network's input size)" if choice.tile else "")
             + f", {seconds:.1f} s",
             f"budget: ε={epsilon_steps}/255" + (" (the noise bank's own)" if choice.noise is not None else ""),
             f"measured: max|δ|={linf}/255 (L∞), "
             f"PSNR={'inf' if math.isinf(psnr) else f'{psnr:.2f}'} dB",
             "download: lossless PNG (re-saving it as JPEG or WebP changes the pixels and weakens the protection)"]
    lines += [f"note: {n}" for n in notes]
    return "\n".join(lines)


@dataclass
class Result:
    png_path: Path          # the protected image, lossless PNG (shown and offered for download)
    map_path: Path          # the amplified noise map
    report: str
    linf: int               # measured max |x' - x|, in /255 steps
    psnr: float


def protect_upload(image_path: str | os.PathLike, choice: Choice, label: str | int | None,
                   epsilon: int | float | None, out_dir: str | os.PathLike, limits: Limits | None = None,
                   on_tile: Callable[[int, int], None] | None = None) -> Result:
    """What the Protect button does: read, protect, measure, and write the PNG and the noise map to out_dir."""
    limits = limits or Limits()
    if epsilon is None:
        epsilon = choice.fixed_epsilon or EPS_DEFAULT
    t0 = time.perf_counter()
    original, notes = read_image(image_path, limits, choice.uses_network)
    n_tiles = tile_count(choice, *original.shape[:2], limits)
    if on_tile is not None:
        on_tile(0, n_tiles)
    protected = protect_array(original, choice, label, epsilon, limits, on_tile)
    seconds = time.perf_counter() - t0
    # A noise bank keeps its own budget: a larger epsilon does not make its whole steps any larger.
    budget = choice.fixed_epsilon or int(epsilon)
    if choice.fixed_epsilon is not None and int(epsilon) != budget:
        notes.append(f"ε={int(epsilon)}/255 was asked for; the noise bank's own {budget}/255 applies")
    out_dir = Path(out_dir)
    key = re.sub(r"[^A-Za-z0-9]+", "-", choice.key).strip("-")
    png_path = out_dir / f"{_safe_stem(image_path)}_protected_{key}_eps{budget}.png"
    PIL.Image.fromarray(protected, mode="RGB").save(png_path, format="PNG")
    map_path = out_dir / "noise_map.png"
    PIL.Image.fromarray(noise_map(original, protected, budget), mode="RGB").save(map_path, format="PNG",
                                                                               compress_level=1)
    text = report_text(choice, label, budget, original, protected, n_tiles, seconds, notes)
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
        else:
            eps_update = gr.update(interactive=True, info="the L∞ budget per pixel value, in /255 steps")
        return label_update, eps_update, f"**{key}**: {ch.description}"

    def run(image_path, key, label, epsilon, progress=gr.Progress()):
        if image_path is None:
            raise gr.Error("Upload an image first.")
        if key not in catalogue.choices:
            raise gr.Error(f"unknown method {key!r}; choose one of {keys}.")
        try:
            result = protect_upload(image_path, catalogue.choices[key], label, epsilon, outputs.new_dir(), limits,
                                    on_tile=lambda i, n: progress((i, n), desc="protecting", unit="tiles"))
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
    limits_text = (
        f"Limits: up to {_mp(limits.max_pixels)} per image ({_mp(limits.max_network_pixels)} for methods that run "
        f"a network); images are protected in tiles of at most {limits.tile}x{limits.tile} (methods that run a "
        f"network: tiles of its input size, many at a time), so memory stays bounded. Uploads and results are "
        f"kept only in this server's temporary folders and removed after an hour.")
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
                                label="ε (/255)", interactive=first.fixed_epsilon is None, elem_id="eps")
                btn = gr.Button("Protect", variant="primary", elem_id="protect")
            with gr.Column():
                out_img = gr.Image(label="Protected image", format="png", interactive=False, height=320,
                                   elem_id="protected")
                out_map = gr.Image(label="Noise, amplified (grey = 0, black/white = ∓ε)", format="png",
                                   interactive=False, height=320, elem_id="noise")
                report = gr.Textbox(label="Report", lines=6, interactive=False, elem_id="report")
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
    parser.add_argument("--max-network-pixels", type=int, default=MAX_NETWORK_PIXELS,
                        help="largest image for methods that run a network, in pixels")
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
