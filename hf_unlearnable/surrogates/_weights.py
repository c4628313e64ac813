"""Checks on a downloaded surrogate before anything is allocated from it: a config.json's sizes are only believed
where the safetensors file's header (names and shapes, read without the tensors) agrees with them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import ProtectionError
from .nets import check_size

DAMAGED = "save or download it again"


def header_shapes(path: Path, what: str) -> dict[str, tuple[int, ...]]:
    """{tensor name: shape} from a safetensors header; the tensors themselves are not read."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:   # safetensors' own error type (and OSError) for a damaged file
        raise ProtectionError(f"{what}: {path.name} cannot be read ({type(exc).__name__}: {exc}); the file is "
                              f"damaged: {DAMAGED}.") from None


def check_config(config: Any, what: str) -> None:
    """The fields of a surrogate's config.json have the types and ranges this library writes."""
    where = f"{what}: config.json "
    if not isinstance(config.arch, str):
        raise ProtectionError(f"{where}arch={config.arch!r} is not an architecture name; {DAMAGED}.")
    # a transformers surrogate's sizes are in hf_config (checked against the weights by check_fits); width is unused
    check_size(config.width if config.hf_config is None else None, config.num_classes, where)
    size = config.image_size
    if (not isinstance(size, list) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 4096 for v in size)):
        raise ProtectionError(f"{where}image_size={size!r} must be [height, width] in pixels (1-4096); {DAMAGED}.")
    names = config.class_names
    if names is not None and (not isinstance(names, list) or len(names) != config.num_classes
                              or not all(isinstance(n, str) for n in names)):
        raise ProtectionError(f"{where}class_names must be {config.num_classes} strings (one per class); {DAMAGED}.")


def check_fits(build: Callable[[], torch.nn.Module], shapes: dict[str, tuple[int, ...]], what: str) -> None:
    """The network a config describes, built on the meta device (no memory), has exactly the tensors of the weights
    file: a config naming sizes the file does not hold is refused before the real network is allocated."""
    with torch.device("meta"):
        model = build()
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(want) - set(shapes))
    unexpected = sorted(set(shapes) - set(want))
    wrong = sorted(k for k in set(want) & set(shapes) if want[k] != shapes[k])
    if missing or unexpected or wrong:
        detail = (f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}" if unexpected
                  else f"{wrong[0]} is {list(shapes[wrong[0]])} in the file, {list(want[wrong[0]])} in the config")
        raise ProtectionError(f"{what}: model.safetensors does not fit the network its config.json describes "
                              f"({detail}); the folder is damaged or was not written by this library: {DAMAGED}.")


def check_transformers_size(folder: Path, what: str) -> None:
    """A transformers checkpoint's config.json (built on the meta device) describes no more parameters than its
    model.safetensors holds (tensor names differ by prefixes between checkpoints, so the totals are compared)."""
    from transformers import AutoConfig, AutoModelForImageClassification

    cfg = json.loads((folder / "config.json").read_text())
    cfg.pop("auto_map", None)    # never a repo's own code
    try:
        hf = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
        with torch.device("meta"):
            model = AutoModelForImageClassification.from_config(hf, trust_remote_code=False)
    except (ValueError, TypeError, KeyError) as exc:
        raise ProtectionError(f"{what}: its config.json describes no image classifier that transformers ships "
                              f"({exc}); a repo's own code (auto_map) is never loaded.") from None
    described = sum(p.numel() for p in model.parameters())
    held = sum(int(torch.Size(s).numel()) for s in header_shapes(folder / "model.safetensors", what).values())
    if described > held:
        raise ProtectionError(f"{what}: its config.json describes {described:,} parameters but model.safetensors "
                              f"holds {held:,}; the config does not belong to these weights: {DAMAGED}.")
