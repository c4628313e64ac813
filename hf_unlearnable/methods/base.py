"""The small shared contract every protection method implements (methods/<name>.py + one registry line)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import numpy as np

from ..errors import ProtectionError

if TYPE_CHECKING:  # pragma: no cover
    from .._data import LabelledImages
    from ..noise import Noise


@dataclass
class MethodConfig:
    """Options shared by every method. Subclasses add their own fields with the paper's defaults.

    `norm` is the norm of the budget `epsilon` ("linf", "l2" or "l0"; _norms.py says what each means at any image
    size); a method with another norm sets it here with its own `epsilon` default."""

    norm: ClassVar[str] = "linf"
    epsilon: float = 8 / 255
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MethodConfig":
        return cls.from_options(**data)

    @classmethod
    def from_options(cls, method: str = "", **options: Any) -> "MethodConfig":
        """Build a config from user keyword options; an unknown option is an error that lists the known ones."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ProtectionError(
                f"unknown option(s) {unknown} for method {method or cls.__name__!r}; "
                f"known options: {sorted(known)}."
            )
        try:
            cfg = cls(**options)
        except TypeError as exc:
            raise ProtectionError(f"bad options for method {method!r}: {exc}") from None
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Check field values; subclasses extend. Raise ProtectionError naming the option and the fix."""
        from .._images import check_seed
        from .._norms import check_budget

        for f in fields(self):   # NumPy scalars as Python ones: the checks below and the JSON config take those
            value = getattr(self, f.name)
            if isinstance(value, (np.bool_, np.integer, np.floating)):
                setattr(self, f.name, value.item())
        self.epsilon = check_budget(self.norm, self.epsilon)
        self.seed = check_seed(self.seed)
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name), f.type)
        if hasattr(self, "surrogate_width"):     # before any data is read: the craft builds a net of this width
            from ..surrogates.nets import check_size

            check_size(self.surrogate_width, 1, "surrogate_")


_SIMPLE_TYPES = {"bool", "int", "float", "str", "None"}


def _check_type(name: str, value: Any, annotation: Any) -> None:
    """The declared type of a simple option (bool / int / float / str, optionally | None), so that a string "False"
    never switches an option on and "0.01" never reaches a comparison. Other annotations are the method's to check."""
    allowed = {t.strip() for t in str(annotation).split("|")}
    if not allowed <= _SIMPLE_TYPES:
        return
    if value is None:
        ok = "None" in allowed
    elif isinstance(value, bool):
        ok = "bool" in allowed
    elif isinstance(value, int):
        ok = bool(allowed & {"int", "float"})
    elif isinstance(value, float):
        ok = "float" in allowed
        if ok and not math.isfinite(value):    # inf or nan would be compared, clamped or multiplied silently
            raise ProtectionError(f"{name}={value!r} must be a finite number.")
    else:
        ok = isinstance(value, str) and "str" in allowed
    if not ok:
        words = {"bool": "True or False", "int": "an integer", "float": "a number", "str": "a string", "None": "None"}
        want = " or ".join(words[t] for t in ("bool", "int", "float", "str", "None") if t in allowed)
        raise ProtectionError(f"{name}={value!r} must be {want} (got {type(value).__name__}).")


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if hasattr(value, "name_or_path"):  # a Surrogate: record where it came from, not its weights
        return value.name_or_path
    return value


class Method:
    """One protection method.

    - `perturb(images, labels, ids)`: one batch of equal-size images, uint8 [B, H, W, 3] in, float delta
      (pixel units, same shape) out.
      What `protect(method=...)` calls inside `Dataset.map`. Methods without a per-batch form set
      `per_batch = False` and are applied through `craft()` + `protect(noise=...)`.
    - `craft(data, checkpoint_dir)`: the full dataset-level algorithm, returning a `Noise`. Methods whose craft
      splits its work across processes started by `accelerate launch` / torchrun set `splits_across_processes`.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    norm: ClassVar[str] = "linf"             # the norm of the budget: config_class.norm (checked at registration)
    per_batch: ClassVar[bool] = True
    uses_resolution: ClassVar[bool] = True   # works at the working resolution (runs a network); else at full size
    batch_coupled: ClassVar[bool] = False    # per-batch noise depends on which rows share a batch (not only the row)
    # sets pixels to class values (ops) rather than adding noise: a row already holding them carries the shortcut
    # and is released as it is, with a warning, where an unchanged row is otherwise refused as unprotected
    sets_pixels: ClassVar[bool] = False
    uses_labels: ClassVar[bool] = False
    splits_across_processes: ClassVar[bool] = False
    splits_note: ClassVar[str] = ""   # which forms split, when `splits` narrows it (shown in the refusal message)

    @classmethod
    def splits(cls, config: MethodConfig) -> bool:
        """Whether craft() with this config splits across processes (a method may split only some forms)."""
        return cls.splits_across_processes

    @classmethod
    def check_processes(cls, config: MethodConfig) -> None:
        """Refuse to craft as one of several launched processes unless this craft splits across them (each process
        would otherwise redo all the work, or mix rows it does not own)."""
        from .._distributed import launched_processes
        from . import METHODS

        processes = launched_processes()
        if processes > 1 and not cls.splits(config):
            mode = f" {config.mode}" if getattr(config, "mode", None) else ""
            splitting = ", ".join(f"{n}{c.splits_note}" for n, c in sorted(METHODS.items())
                                  if c.splits_across_processes)
            raise ProtectionError(
                f"{cls.name}{mode}'s craft runs in one process, but this one was started as 1 of {processes} "
                f"(WORLD_SIZE={processes}, from accelerate launch or torchrun); run it as a plain process. Crafts "
                f"that split across processes: {splitting}.")

    @classmethod
    def check_craft(cls, config: MethodConfig) -> None:
        """Refuse, before any data is read, options that craft() would ignore (rem: the per-batch form's
        surrogate=); by default every option is the craft's too."""

    def __init__(self, config: MethodConfig | None = None, **options: Any):
        if config is None:
            config = self.config_class.from_options(self.name, **options)
        elif options:
            raise ProtectionError("pass either a config object or keyword options, not both")
        self.config = config

    def working_resolution(self) -> tuple[int, int]:
        """The size (h, w) images are crafted at when resolution= is not given: the library's default (32)."""
        from .._images import DEFAULT_RESOLUTION

        return DEFAULT_RESOLUTION, DEFAULT_RESOLUTION

    def pseudo_labels(self, images: np.ndarray) -> np.ndarray:
        """Classes for a batch without labels; methods without a surrogate need the labels. Not the surrogate's
        predicted class in their stead: ar with those classes on the anydata folder left victims at 63.35 % at
        32x32 and 19.80 % at 64x64 (clean 72.55 / 69.50 %; with the true labels 10.20 / 10.00 %), where em
        crafted on clusters holds at both (31.75 / 28.10 %)."""
        raise ProtectionError(f"{self.name} needs a label column (its noise is one pattern per class) and none was "
                              "found: name it with label_column=. Without labels, craft class-wise em on clusters "
                              "instead, noise = craft(ds, \"em\", mode=\"classwise\"), then protect(noise=noise): "
                              f"{self.name} with guessed classes protects unreliably.")

    def perturb(self, images: np.ndarray, labels: np.ndarray | None, ids: Sequence[str]) -> np.ndarray:
        raise ProtectionError(
            f"method {self.name!r} has no per-batch form: craft the noise over the whole dataset first, "
            f"noise = craft(ds, {self.name!r}), then ds.map(protect(noise=noise), batched=True)."
        )

    def craft(self, data: "LabelledImages", checkpoint_dir: str | None = None) -> "Noise":
        """The dataset-level algorithm (what `hf_unlearnable.craft` runs): refuses a launch it cannot split, runs
        the method's `_craft` hook (its loop, checkpoints and progress) and builds the Noise from what it returns."""
        from ..noise import Noise

        self.check_craft(self.config)
        self.check_processes(self.config)
        out = self._craft(data, checkpoint_dir)
        config = out.method_config or self.config.to_dict()
        names = data.class_names or ([str(k) for k in range(data.num_classes)] if self.uses_labels else None)
        return Noise.from_deltas(out.deltas, ids=data.ids if out.kind == "samplewise" else None,
                                 epsilon=config["epsilon"], method=self.name, kind=out.kind, method_config=config,
                                 class_names=names, source=data.source, stats=out.stats)

    def _craft(self, data: "LabelledImages", checkpoint_dir: str | None = None) -> "Crafted":
        """Default: the per-batch form applied to every row, as sample-wise noise."""
        chunk = 256
        deltas = np.concatenate([
            self.perturb(data.images[s:s + chunk], None if data.labels is None else data.labels[s:s + chunk],
                         data.ids[s:s + chunk])
            for s in range(0, len(data), chunk)])
        return Crafted(deltas)


@dataclass
class Crafted:
    """What a method's `_craft` hook returns; `Method.craft` makes the Noise of it."""

    deltas: np.ndarray                  # float pixel units, N x H x W x C: one per row, or one per class
    kind: str = "samplewise"            # "samplewise" (keyed by row id) or "classwise" (by label)
    stats: dict = field(default_factory=dict)
    method_config: dict | None = None   # the config it crafted with, when that is not self.config afterwards


class SurrogateMethod(Method):
    """A Method whose per-batch form steps against a fixed surrogate (`config.surrogate`: None = the bundled
    default, a path, a repo id or a model) and whose delta may start at a per-row seeded U(-eps, eps)
    (`config.random_start`). Shared by em (and pue) and bayes."""

    def __init__(self, config: MethodConfig | None = None, **options: Any):
        super().__init__(config, **options)
        self._surrogate = None

    def working_resolution(self) -> tuple[int, int]:
        """What the surrogate was made for (its image size) when one is named; else the library's default."""
        if getattr(self.config, "surrogate", None) is None:
            return super().working_resolution()
        sur = self.surrogate
        size = getattr(sur.config, "input_size", None) or getattr(sur.config, "image_size", None)
        return (int(size[0]), int(size[1])) if size else super().working_resolution()

    def pseudo_labels(self, images: np.ndarray) -> np.ndarray:
        """Classes for a batch without labels: the surrogate's predicted class of each image."""
        from .._clusters import predicted_classes
        from .._images import to_tensor
        from ..training import device

        return predicted_classes(self.surrogate.to(device()).eval(), to_tensor(images).to(device()))

    @property
    def surrogate(self):
        if self._surrogate is None:
            from ..surrogates import load_surrogate

            self._surrogate = load_surrogate(self.config.surrogate)
        return self._surrogate

    def _pgd_per_batch(self, images: np.ndarray, labels: np.ndarray, ids: Sequence[str], random_start: bool,
                       chunk) -> np.ndarray:
        """The per-batch form of the PGD methods (em, tap, rem): the batch and its labels on the device, a start per
        row id, chunks of at most `batch_size` rows and PGD_PIXELS pixels (memory stays flat whatever the working
        resolution), fp32 (bf16 kernels differ with the batch size, and so would the bytes). `chunk(model, x, y,
        delta, rows)` returns the delta of one chunk (`rows`: its slice of `ids`)."""
        import torch

        from .._images import to_tensor
        from ..training import device
        from . import _pgd

        dev = device()
        model = self.surrogate.to(dev).eval()
        x = to_tensor(images).to(dev)
        y = torch.as_tensor(labels, dtype=torch.long, device=dev)
        delta = self._start(x.shape, ids, random_start).to(dev)
        rows = max(1, min(self.config.batch_size, _pgd.PGD_PIXELS // (x.shape[2] * x.shape[3])))
        out = [chunk(model, x[s:s + rows], y[s:s + rows], delta[s:s + rows], slice(s, s + rows))
               for s in range(0, len(x), rows)]
        return torch.cat(out).permute(0, 2, 3, 1).cpu().numpy()

    def _craft_inputs(self, data):
        """What every whole-set craft starts from: labels checked (present, at least two classes), the seed set,
        and the images as uint8 NCHW (kept on the CPU; minibatches move to the device) with int64 labels."""
        import torch

        from ..training import nchw, seed_everything

        if data.labels is None:
            raise ProtectionError(f"{self.name} needs labels: the dataset has no label column "
                                  "(pass label_column=...).")
        if len(np.unique(data.labels)) < 2:
            raise ProtectionError(f"{self.name} needs at least two classes in the data.")
        seed_everything(self.config.seed)
        images = nchw(data.images)
        return images, torch.from_numpy(data.labels).long()

    def _start(self, shape, ids: Sequence[str], random_start: bool | None = None):
        """Initial delta [N, ...]: zeros, or U(-eps, eps) drawn per row id (independent of batching)."""
        import torch

        from .._images import row_rng

        if not (self.config.random_start if random_start is None else random_start):
            return torch.zeros(shape)
        eps = self.config.epsilon
        rows = [row_rng(self.config.seed, r).uniform(-eps, eps, size=shape[1:]) for r in ids]
        return torch.from_numpy(np.stack(rows).astype(np.float32))


class LabelledSurrogateMethod(SurrogateMethod):
    """A SurrogateMethod whose per-batch loss is the surrogate's cross-entropy on the labels (em, tap, rem): it
    needs labels below the surrogate's class count, K, which the transform checks with the fix."""

    uses_labels = True

    @property
    def num_classes(self) -> int:
        return self.surrogate.num_classes
