"""Surrogate models: a network plus a typed config, saved as config.json + model.safetensors.

The bundled default (surrogates/default/) is a small CIFAR-10 ConvNet trained by hub_scripts/train_surrogate.py;
it loads offline and is what per-batch methods use unless `surrogate=` names another.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._artefacts import CONFIG_NAME, atomic_dir, open_artefact
from ..errors import ProtectionError
from .nets import ARCHITECTURES, build

WEIGHTS_NAME = "model.safetensors"
DEFAULT_DIR = Path(__file__).parent / "default"


@dataclass
class SurrogateConfig:
    arch: str = "convnet"
    width: int | None = None
    num_classes: int = 10
    class_names: list[str] | None = None
    image_size: list[int] = field(default_factory=lambda: [32, 32])
    training: dict[str, Any] = field(default_factory=dict)
    library_version: str = ""


class Surrogate(torch.nn.Module):
    """A classifier used while crafting: `features(x)` and `forward(x)` on float [0, 1] NCHW pixels."""

    def __init__(self, config: SurrogateConfig, model: torch.nn.Module | None = None, name_or_path: str = ""):
        super().__init__()
        if config.arch not in ARCHITECTURES:
            raise ProtectionError(f"unknown surrogate architecture {config.arch!r}; available: {sorted(ARCHITECTURES)}.")
        self.config = config
        self.model = model if model is not None else build(config.arch, config.num_classes, config.width)
        self.name_or_path = name_or_path

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write config.json + model.safetensors atomically."""
        from safetensors.torch import save_file

        from .. import __version__

        with atomic_dir(save_directory) as tmp:
            cfg = asdict(self.config)
            cfg["library_version"] = cfg["library_version"] or __version__
            state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
            save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "arch": self.config.arch})
            (tmp / CONFIG_NAME).write_text(json.dumps(cfg, indent=2, sort_keys=True))
        return Path(save_directory)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "Surrogate":
        """Load config.json + model.safetensors from a local directory; pickle files are refused."""
        from safetensors.torch import load_file

        folder, cfg_dict = open_artefact(path, WEIGHTS_NAME, "surrogate")
        known = set(SurrogateConfig.__dataclass_fields__)
        config = SurrogateConfig(**{k: v for k, v in cfg_dict.items() if k in known})
        sur = cls(config, name_or_path=str(path))
        sur.model.load_state_dict(load_file(str(folder / WEIGHTS_NAME)))
        sur.eval()
        return sur


@functools.lru_cache(maxsize=1)
def _default_cached() -> Surrogate:
    if not (DEFAULT_DIR / WEIGHTS_NAME).exists():
        raise ProtectionError(
            f"the bundled default surrogate is missing from {DEFAULT_DIR}; reinstall the package or build it with "
            "hub_scripts/train_surrogate.py.")
    sur = Surrogate.from_pretrained(DEFAULT_DIR)
    sur.name_or_path = "default"
    return sur


def load_surrogate(spec: Any = None) -> Surrogate:
    """`None`/"default" -> the bundled surrogate; a Surrogate -> itself; a path -> Surrogate.from_pretrained."""
    if spec is None or (isinstance(spec, str) and spec == "default"):
        return _default_cached()
    if isinstance(spec, Surrogate):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        return Surrogate.from_pretrained(spec)
    raise ProtectionError(f"surrogate={spec!r}: pass None for the bundled default, a Surrogate, or a directory path.")
