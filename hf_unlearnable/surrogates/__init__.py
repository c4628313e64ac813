"""Surrogate models: a network plus a typed config, saved as config.json + model.safetensors.

The bundled default (surrogates/default/) is a small CIFAR-10 ConvNet trained by hub_scripts/train_surrogate.py;
it loads offline and is what per-batch methods use unless `surrogate=` names another. `train_surrogate(ds)`
(surrogates/train.py) makes one for a dataset's own classes, any number of them. Any transformers
`AutoModelForImageClassification` (a Hub repo id, a local folder or a model object) works too: it is wrapped so
that it takes the same input as the built-in nets (float [0, 1] NCHW pixels; resizing and the model's own
normalisation happen inside, differentiably) and `features(x)` is the pooled representation its classifier head
reads.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._artefacts import (CONFIG_NAME, atomic_dir, config_from_dict, fetch_artefact, is_local, push_artefact,
                          read_safetensors, render_card)
from ..errors import ProtectionError
from .nets import ARCHITECTURES, build

WEIGHTS_NAME = "model.safetensors"
DEFAULT_DIR = Path(__file__).parent / "default"
TRANSFORMERS_ARCH = "transformers"


@dataclass
class SurrogateConfig:
    arch: str = "convnet"
    width: int | None = None
    num_classes: int = 10
    class_names: list[str] | None = None
    image_size: list[int] = field(default_factory=lambda: [32, 32])
    training: dict[str, Any] = field(default_factory=dict)
    library_version: str = ""
    # arch="transformers": the model's transformers config (to_dict()) and the pre-processing it expects
    hf_config: dict[str, Any] | None = None
    image_mean: list[float] | None = None
    image_std: list[float] | None = None
    input_size: list[int] | None = None


class _TransformersClassifier(torch.nn.Module):
    """A transformers image classifier taking float [0, 1] NCHW pixels, like the built-in nets.

    Resizing to the model's input size and its mean/std normalisation are done here, differentiably, so that
    gradients w.r.t. the pixels (EM, bayes) reach the images. `features(x)` is the input of the classifier head,
    flattened to [B, D] (captured with a forward pre-hook, so it works for any architecture with such a head).
    """

    HEAD_NAMES = ("classifier", "head", "fc", "cls_classifier")

    def __init__(self, net: torch.nn.Module, image_mean=None, image_std=None, input_size=None):
        super().__init__()
        self.net = net
        c = getattr(net.config, "num_channels", 3)
        self.register_buffer("mean", torch.tensor(image_mean or [0.0] * c, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(image_std or [1.0] * c, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)
        self.input_size = tuple(input_size) if input_size else None
        # the head's name, not the module: a second reference would register it twice (shared tensors)
        self._head_name = next((n for n in self.HEAD_NAMES if isinstance(getattr(net, n, None), torch.nn.Module)), None)
        if self._head_name is None:
            raise ProtectionError(f"transformers model {type(net).__name__} has no classifier head named one of "
                                  f"{self.HEAD_NAMES}; features() cannot find its pooled representation.")
        self.feature_dim = None

    def _pixels(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_size and tuple(x.shape[-2:]) != self.input_size:
            x = torch.nn.functional.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_values=self._pixels(x)).logits

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features_and_logits(x)[0]

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        captured = []
        handle = getattr(self.net, self._head_name).register_forward_pre_hook(lambda mod, args: captured.append(args[0]))
        try:
            logits = self.net(pixel_values=self._pixels(x)).logits
        finally:
            handle.remove()
        return captured[0].flatten(1), logits


def _build_transformers(config: "SurrogateConfig") -> _TransformersClassifier:
    from transformers import AutoConfig, AutoModelForImageClassification

    if not config.hf_config or "model_type" not in config.hf_config:
        raise ProtectionError("a transformers surrogate config needs hf_config with a model_type.")
    hf = dict(config.hf_config)
    hf.pop("auto_map", None)   # never a repo's own Python code: only architectures transformers ships
    try:
        hf_cfg = AutoConfig.for_model(hf.pop("model_type"), **hf)
        net = AutoModelForImageClassification.from_config(hf_cfg, trust_remote_code=False)
    except ValueError as exc:
        raise ProtectionError(f"a transformers surrogate config names an architecture transformers does not ship "
                              f"({exc}); remote code is never run.") from None
    return _TransformersClassifier(net, config.image_mean, config.image_std, config.input_size)


class Surrogate(torch.nn.Module):
    """A classifier used while crafting: `features(x)` and `forward(x)` on float [0, 1] NCHW pixels."""

    def __init__(self, config: SurrogateConfig, model: torch.nn.Module | None = None, name_or_path: str = ""):
        super().__init__()
        if config.arch not in ARCHITECTURES and config.arch != TRANSFORMERS_ARCH:
            raise ProtectionError(f"unknown surrogate architecture {config.arch!r}; available: "
                                  f"{sorted(ARCHITECTURES) + [TRANSFORMERS_ARCH]}.")
        self.config = config
        if model is None:
            model = (_build_transformers(config) if config.arch == TRANSFORMERS_ARCH
                     else build(config.arch, config.num_classes, config.width))
        self.model = model
        self.name_or_path = name_or_path

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`features(x)` and `forward(x)`, from one forward pass where the model offers that."""
        both = getattr(self.model, "features_and_logits", None)
        return both(x) if both is not None else (self.model.features(x), self.model(x))

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write config.json + model.safetensors atomically."""
        from safetensors.torch import save_file

        from .._version import __version__

        with atomic_dir(save_directory) as tmp:
            cfg = asdict(self.config)
            cfg["library_version"] = cfg["library_version"] or __version__
            state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
            save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "arch": self.config.arch})
            (tmp / CONFIG_NAME).write_text(json.dumps(cfg, indent=2, sort_keys=True))
        return Path(save_directory)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *, revision: str | None = None,
                        token: str | bool | None = None, cache_dir: str | os.PathLike | None = None,
                        force_download: bool = False, local_files_only: bool = False) -> "Surrogate":
        """Load config.json + model.safetensors from a local folder or a Hub repo (at `revision`).

        A transformers image-classification checkpoint (its config.json has a `model_type`) is loaded with
        `from_transformers`. Pickle files are never read: a repo or folder holding only pickles is refused.
        """
        kw = dict(revision=revision, token=token, cache_dir=cache_dir, force_download=force_download,
                  local_files_only=local_files_only)
        from ._weights import check_config, check_fits, check_transformers_size, header_shapes

        folder, cfg_dict = fetch_artefact(pretrained_model_name_or_path, WEIGHTS_NAME, "surrogate", **kw)
        what = f"surrogate {str(pretrained_model_name_or_path)!r}"
        if "model_type" in cfg_dict and "arch" not in cfg_dict:
            check_transformers_size(folder, what)
            return cls.from_transformers(pretrained_model_name_or_path, **kw)
        config = config_from_dict(SurrogateConfig, cfg_dict, what)
        check_config(config, what)
        if config.arch not in ARCHITECTURES and config.arch != TRANSFORMERS_ARCH:
            raise ProtectionError(f"{what}: unknown surrogate architecture {config.arch!r}; available: "
                                  f"{sorted(ARCHITECTURES) + [TRANSFORMERS_ARCH]}.")
        check_fits(lambda: cls(config).model, header_shapes(folder / WEIGHTS_NAME, what), what)
        sur = cls(config, name_or_path=str(pretrained_model_name_or_path))
        try:
            sur.model.load_state_dict(read_safetensors(folder / WEIGHTS_NAME, what, (), framework="torch"))
        except RuntimeError as exc:     # missing / unexpected keys or shapes: not the architecture of its config
            raise ProtectionError(f"{what}: {WEIGHTS_NAME} does not fit the architecture its {CONFIG_NAME} names "
                                  f"({str(exc).splitlines()[0]}).") from None
        sur.eval()
        return sur

    @classmethod
    def from_transformers(cls, model: Any, *, revision: str | None = None, token: str | bool | None = None,
                          image_mean: list[float] | None = None, image_std: list[float] | None = None,
                          **hub_kwargs: Any) -> "Surrogate":
        """Wrap a transformers `AutoModelForImageClassification`: a model object, a local folder or a repo id.

        Weights are loaded from safetensors only (`use_safetensors=True`; pickled `pytorch_model.bin` is refused).
        The mean/std normalisation comes from `image_mean`/`image_std`, else the checkpoint's
        preprocessor_config.json, else none; images are resized to the model's `image_size` inside the model.
        """
        from transformers import AutoModelForImageClassification, PreTrainedModel

        name = getattr(model, "name_or_path", "") if isinstance(model, PreTrainedModel) else str(model)
        if not isinstance(model, PreTrainedModel):
            pre = _preprocessor_config(str(model), revision, token, hub_kwargs)
            image_mean = image_mean if image_mean is not None else pre.get("image_mean")
            image_std = image_std if image_std is not None else pre.get("image_std")
            try:
                model, loading = AutoModelForImageClassification.from_pretrained(
                    str(model), revision=revision, token=token, use_safetensors=True, trust_remote_code=False,
                    cache_dir=hub_kwargs.get("cache_dir"), force_download=hub_kwargs.get("force_download", False),
                    local_files_only=hub_kwargs.get("local_files_only", False), output_loading_info=True)
            except (OSError, ValueError) as exc:   # ValueError: an architecture only the repo's own code defines
                raise ProtectionError(f"surrogate {name!r}: cannot load it as a transformers image classifier from "
                                      f"safetensors ({exc}). Pickled weights (.bin) and a repo's own code "
                                      "(trust_remote_code) are never loaded.") from None
            if loading.get("missing_keys"):   # transformers fills these with random values and carries on
                missing = sorted(loading["missing_keys"])
                raise ProtectionError(f"surrogate {name!r}: its safetensors weights lack {len(missing)} of the "
                                      f"model's tensors (e.g. {missing[:3]}), which would be random: it is not a "
                                      "checkpoint of the architecture its config.json names.")
        hf = model.config
        size = getattr(hf, "image_size", None)
        size = [size, size] if isinstance(size, int) else (list(size) if size else None)
        labels = [hf.id2label[i] for i in range(hf.num_labels)] if getattr(hf, "id2label", None) else None
        config = SurrogateConfig(arch=TRANSFORMERS_ARCH, num_classes=hf.num_labels, class_names=labels,
                                 image_size=size or [32, 32], hf_config=json.loads(hf.to_json_string()),
                                 image_mean=image_mean,
                                 image_std=image_std, input_size=size)
        sur = cls(config, _TransformersClassifier(model, image_mean, image_std, size), name_or_path=name)
        sur.eval()
        return sur

    def push_to_hub(self, repo_id: str, *, commit_message: str | None = None, private: bool | None = None,
                    token: str | bool | None = None, branch: str | None = None, create_pr: bool = False,
                    license: str | None = None, overwrite_card: bool = False):
        """Upload config.json + model.safetensors + a card (model_cards/surrogate_card.md) to a model repo.

        An existing README.md is kept unless `overwrite_card=True`; `token` is never written anywhere.
        """
        return push_artefact(self.save_pretrained, self.card(repo_id, license=license), repo_id,
                             what=f"{self.config.arch} surrogate", commit_message=commit_message, private=private,
                             token=token, branch=branch, create_pr=create_pr, overwrite_card=overwrite_card)

    def card(self, repo_id: str = "<user>/<repo>", *, license: str | None = None) -> str:
        """The model card (README.md) for this surrogate, rendered from model_cards/surrogate_card.md."""
        from .._version import __version__

        c = self.config
        t = c.training or {}
        acc = t.get("test_accuracy")
        front = {"library_name": "hf_unlearnable", "license": license, "pipeline_tag": "image-classification",
                 "tags": ["hf_unlearnable", "unlearnable-examples", "surrogate", c.arch],
                 "datasets": [t["dataset_id"]] if t.get("dataset_id") else None}
        if acc is not None and t.get("dataset_id"):
            front["model-index"] = [{"name": repo_id.split("/")[-1], "results": [{
                "task": {"type": "image-classification", "name": "Image Classification"},
                "dataset": {"type": t["dataset_id"], "name": t["dataset_id"], "split": "test"},
                "metrics": [{"type": "accuracy", "value": float(acc), "name": "clean test accuracy"}]}]}]
        arch_desc = {"convnet": "small VGG-style ConvNet", "resnet18": "CIFAR ResNet-18",
                     TRANSFORMERS_ARCH: f"transformers {(c.hf_config or {}).get('model_type', '')}"}.get(c.arch, c.arch)
        return render_card("surrogate_card.md", front, title=f"hf_unlearnable surrogate: {c.arch}, {c.num_classes} classes",
                           arch_description=arch_desc, arch=c.arch, width=c.width, num_classes=c.num_classes,
                           class_names=c.class_names, image_size=c.image_size,
                           training_data=t.get("data") or "not recorded",
                           test_accuracy=f"{100 * acc:.2f} %" if acc is not None else "not measured",
                           library_version=c.library_version or __version__, repo_id=repo_id,
                           training=json.dumps(t, indent=2, sort_keys=True, default=str))


def _preprocessor_config(spec: str, revision, token, hub_kwargs) -> dict:
    """image_mean / image_std from a checkpoint's preprocessor_config.json (plain JSON), or {} if it has none."""
    path = Path(spec).expanduser() / "preprocessor_config.json"
    if is_local(spec):
        return json.loads(path.read_text()) if path.exists() else {}
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return json.loads(Path(hf_hub_download(spec, "preprocessor_config.json", revision=revision, token=token,
                                               cache_dir=hub_kwargs.get("cache_dir"))).read_text())
    except EntryNotFoundError:
        return {}


@functools.lru_cache(maxsize=1)
def _default_cached() -> Surrogate:
    if not (DEFAULT_DIR / WEIGHTS_NAME).exists():
        raise ProtectionError(
            f"the bundled default surrogate is missing from {DEFAULT_DIR}; reinstall the package or build it with "
            "hub_scripts/train_surrogate.py.")
    sur = Surrogate.from_pretrained(DEFAULT_DIR)
    sur.name_or_path = "default"
    return sur


class SurrogateEnsemble(torch.nn.Module):
    """Several surrogates used as one (perturbations that fool several models transfer better to an unseen one).

    `forward` averages the members' logits. `features` puts the members' features side by side, each divided by
    its own max-abs scale, so that no member dominates a distance because its features happen to be larger; the
    scales are fixed by `calibrate(x)` on the clean images before crafting (until then they are 1).
    """

    def __init__(self, members: list[Surrogate]):
        super().__init__()
        if len(members) < 2:
            raise ProtectionError("an ensemble needs at least two surrogates; pass a single one directly.")
        first = members[0]
        for m in members[1:]:
            if m.num_classes != first.num_classes or (m.config.class_names and first.config.class_names
                                                      and list(m.config.class_names) != list(first.config.class_names)):
                raise ProtectionError(f"ensemble members disagree on the classes: {first.name_or_path!r} has "
                                      f"{first.num_classes} ({first.config.class_names}), {m.name_or_path!r} has "
                                      f"{m.num_classes} ({m.config.class_names}).")
        self.members = torch.nn.ModuleList(members)
        self.config = first.config
        self.name_or_path = [m.name_or_path for m in members]
        self.register_buffer("scales", torch.ones(len(members)))

    derived_buffers = ("scales",)   # set by calibrate() from the members and the data, not weights of their own

    @property
    def num_classes(self) -> int:
        return self.members[0].num_classes

    @torch.no_grad()
    def calibrate(self, batches) -> None:
        """Set each member's feature scale to its max-abs feature over `batches` (float [0, 1] NCHW tensors, or one
        such tensor), read one batch at a time."""
        if isinstance(batches, torch.Tensor):
            batches = [batches]
        peak = torch.zeros(len(self.members))
        for x in batches:
            peak = torch.maximum(peak, torch.stack([m.features(x).abs().max().cpu() for m in self.members]))
        self.scales.copy_(peak.clamp_min(1e-12))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([m.features(x) / s for m, s in zip(self.members, self.scales)], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        both = [m.features_and_logits(x) for m in self.members]
        return (torch.cat([z / s for (z, _), s in zip(both, self.scales)], 1),
                torch.stack([logits for _, logits in both]).mean(0))


def load_surrogate(spec: Any = None, *, revision: str | None = None,
                   token: str | bool | None = None) -> Surrogate | SurrogateEnsemble:
    """The surrogate named by `spec`.

    None/"default": the bundled surrogate; a Surrogate: itself; a transformers model object: wrapped; a local
    folder or a Hub repo id ("user/name", at `revision`): an hf_unlearnable surrogate (config.json with `arch`)
    or a transformers image classifier (config.json with `model_type`), safetensors only; a list or tuple of any
    of these: a SurrogateEnsemble of them.
    """
    if isinstance(spec, (list, tuple)):
        return SurrogateEnsemble([load_surrogate(s, revision=revision, token=token) for s in spec])
    if spec is None or (isinstance(spec, str) and spec == "default"):
        return _default_cached()
    if isinstance(spec, (Surrogate, SurrogateEnsemble)):
        return spec
    if isinstance(spec, torch.nn.Module) and hasattr(spec, "config") and hasattr(spec.config, "num_labels"):
        return Surrogate.from_transformers(spec)
    if isinstance(spec, (str, os.PathLike)):
        return Surrogate.from_pretrained(spec, revision=revision, token=token)
    raise ProtectionError(f"surrogate={spec!r}: pass None for the bundled default, a Surrogate, a transformers image "
                          "classifier, a local folder or a Hub repo id.")


from .train import DEFAULT_RESOLUTION, train_surrogate  # noqa: E402  (train.py imports Surrogate from here)
