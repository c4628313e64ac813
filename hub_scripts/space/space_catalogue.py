"""What the Space offers: the per-batch methods of the library's registry that can protect a single picture, and the
class-wise noise banks (the Space card's `models:`, --noise, HF_UNLEARNABLE_SPACE_NOISE); the size limits. No gradio
here (app.py builds the page from this)."""

from __future__ import annotations

import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from hf_unlearnable import Noise, ProtectionError, load_noise, protect
from hf_unlearnable._norms import describe
from hf_unlearnable.methods import METHODS

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
