"""Noise: crafted perturbations, class-wise (one pattern per label) or sample-wise (one per row id).

Stored as whole uint8 steps (int8), which is lossless for the released images: the originals are uint8, so
round(x + 255*delta) == x + round(255*delta). On disk: config.json + noise.safetensors, nothing else is read.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ._artefacts import (CONFIG_NAME, atomic_dir, config_from_dict, fetch_artefact, push_artefact, read_safetensors,
                         render_card)
from ._images import check_epsilon, epsilon_levels
from .errors import ProtectionError

WEIGHTS_NAME = "noise.safetensors"
KINDS = ("classwise", "samplewise")


def _version() -> str:
    from ._version import __version__

    return __version__


@dataclass
class NoiseConfig:
    """What the noise is and where it came from; saved as config.json beside the tensors."""

    method: str
    kind: str
    epsilon: float
    image_shape: list[int]
    epsilon_255: str = ""
    num_classes: int | None = None
    class_names: list[str] | None = None
    seed: int | None = None
    num_rows: int = 0
    library_version: str = field(default_factory=_version)
    source: dict[str, Any] = field(default_factory=dict)
    method_config: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    # label-agnostic noise: the classes are clusters of a surrogate's features (centroids in the safetensors file)
    clustering: dict[str, Any] | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ProtectionError(f"noise kind {self.kind!r} is not one of {KINDS}.")
        self.epsilon = check_epsilon(self.epsilon)
        self.epsilon_255 = f"{epsilon_levels(self.epsilon)}/255"
        self.image_shape = [int(s) for s in self.image_shape]


class Noise:
    """Crafted noise in whole uint8 steps: `steps` is int8 [K or N, H, W, C]; `ids` names rows (sample-wise)."""

    def __init__(self, steps: np.ndarray, config: NoiseConfig, ids: Sequence[str] | None = None,
                 centroids: np.ndarray | None = None):
        steps = np.asarray(steps)
        if steps.dtype != np.int8 or steps.ndim != 4:
            raise ProtectionError(f"noise steps must be an int8 [M, H, W, C] array, got {steps.dtype} {steps.shape}")
        k = epsilon_levels(config.epsilon)
        if np.abs(steps.astype(np.int16)).max(initial=0) > k:
            raise ProtectionError(f"noise exceeds its own budget of {k}/255; the file is corrupt or was edited.")
        if list(steps.shape[1:]) != list(config.image_shape):
            raise ProtectionError(f"noise tensor shape {steps.shape[1:]} does not match config {config.image_shape}.")
        self.steps = steps
        self.config = config
        self.ids = list(ids) if ids is not None else None
        if config.kind == "samplewise":
            if self.ids is None or len(self.ids) != len(steps):
                raise ProtectionError("sample-wise noise needs one id per row.")
            self._index = {rid: i for i, rid in enumerate(self.ids)}
            if len(self._index) != len(self.ids):
                raise ProtectionError("sample-wise noise has duplicate row ids.")
        else:
            if config.num_classes is not None and config.num_classes != len(steps):
                raise ProtectionError(f"class-wise noise has {len(steps)} patterns for {config.num_classes} classes.")
        if (config.clustering is not None) != (centroids is not None):
            raise ProtectionError("label-agnostic noise needs both its clustering record and its centroids; the "
                                  "folder is damaged: save or download it again.")
        if centroids is not None and (centroids.ndim != 2
                                      or (config.kind == "classwise" and len(centroids) != len(steps))):
            raise ProtectionError(f"the noise's centroids {centroids.shape} do not match its {len(steps)} patterns.")
        self.centroids = None if centroids is None else np.asarray(centroids, dtype=np.float32)
        config.num_rows = len(steps)

    # -- construction -------------------------------------------------------------------------------------------
    @classmethod
    def from_deltas(cls, deltas: Sequence[np.ndarray] | np.ndarray, *, ids: Sequence[str] | None, epsilon: float,
                    method: str, kind: str = "samplewise", method_config: dict | None = None,
                    class_names: Sequence[str] | None = None, source: dict | None = None,
                    stats: dict | None = None, clustering: dict | None = None,
                    centroids: np.ndarray | None = None) -> "Noise":
        """Quantise float deltas (pixel units, HxWxC) to whole steps inside the budget. Noise that is not finite (a
        diverged craft) or rounds to zero everywhere is a ProtectionError: it would release the data unprotected."""
        arr = np.stack(list(deltas)) if not isinstance(deltas, np.ndarray) else deltas
        options = "lower lr= (the surrogate's learning rate) or step_size=" if method != "random" else "check epsilon="
        if not np.isfinite(arr).all():
            raise ProtectionError(f"{method}: the crafted noise is not finite (the craft diverged); {options} and "
                                  "craft again. Nothing was protected.")
        k = epsilon_levels(epsilon)
        steps = np.clip(np.rint(arr.astype(np.float64) * 255.0), -k, k).astype(np.int8)
        if not steps.any():
            raise ProtectionError(f"{method}: the crafted noise is zero on every pixel, so every row would be released "
                                  f"unchanged (the craft diverged or its steps are too small); {options} and craft "
                                  "again.")
        stats = dict(stats or {})
        if kind == "classwise":
            empty = [int(c) for c in np.flatnonzero(~steps.reshape(len(steps), -1).any(1))]
            if empty:     # classes with no rows at craft time: their rows are refused when the noise is applied
                stats["empty_patterns"] = empty
        if kind == "samplewise" and ids is not None:
            # Identical images share a content id; keep the first row's noise for them.
            seen: dict[str, int] = {}
            for i, rid in enumerate(ids):
                seen.setdefault(rid, i)
            if len(seen) != len(ids):
                keep = sorted(seen.values())
                steps, ids = steps[keep], [ids[i] for i in keep]
        mc = dict(method_config or {})
        cfg = NoiseConfig(method=method, kind=kind, epsilon=epsilon, image_shape=list(steps.shape[1:]),
                          num_classes=(len(class_names) if class_names else (len(steps) if kind == "classwise" else None)),
                          class_names=list(class_names) if class_names else None, seed=mc.get("seed"),
                          source=dict(source or {}), method_config=mc, stats=stats, clustering=clustering)
        return cls(steps, cfg, ids if kind == "samplewise" else None, centroids)

    # -- properties ---------------------------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def epsilon(self) -> float:
        return self.config.epsilon

    @property
    def method(self) -> str:
        return self.config.method

    def __len__(self) -> int:
        return len(self.steps)

    def __repr__(self) -> str:
        return (f"Noise(method={self.method!r}, kind={self.kind!r}, epsilon={self.config.epsilon_255}, "
                f"rows={len(self)}, image_shape={tuple(self.config.image_shape)})")

    def delta(self) -> np.ndarray:
        """The noise as float32 pixel units."""
        return self.steps.astype(np.float32) / 255.0

    # -- application --------------------------------------------------------------------------------------------
    @property
    def resolution(self) -> tuple[int, int]:
        """The size (h, w) the noise was crafted at; applied to other sizes, it is resized to each image's own."""
        return int(self.config.image_shape[0]), int(self.config.image_shape[1])

    def steps_for(self, labels: np.ndarray | None, ids: Sequence[str], shapes: Sequence[tuple],
                  indices: Sequence[int] | None = None) -> list[np.ndarray]:
        """The noise of each row as whole steps at that row's own size and channels (`shapes`: (h, w, C)): by label
        (class-wise; labels already mapped onto the noise's classes) or by row id (sample-wise); errors name the
        row."""
        from ._images import resize_steps

        return [resize_steps(p, shape) for p, shape in zip(self.patterns_for(labels, ids, len(shapes), indices),
                                                           shapes)]

    def patterns_for(self, labels: np.ndarray | None, ids: Sequence[str], n: int,
                     indices: Sequence[int] | None = None) -> list[np.ndarray]:
        """The stored pattern (whole steps at the crafted size) of each of `n` rows; errors name the row."""
        from ._data import row_in_batch

        empty = set(self.config.stats.get("empty_patterns", ()))
        out = []
        for i in range(n):
            if self.kind == "classwise":
                y = int(labels[i])
                if not 0 <= y < len(self.steps):
                    raise ProtectionError(f"{row_in_batch(i, indices)}: label {y} is out of range for class-wise "
                                          "noise with "
                                          f"{len(self.steps)} classes.")
                if y in empty:
                    name = (self.config.class_names or [None] * len(self.steps))[y]
                    raise ProtectionError(
                        f"{row_in_batch(i, indices)}: class {y}{f' ({name!r})' if name else ''} has an empty pattern "
                        "in this noise (the class had no rows when the noise was crafted, or its noise rounded to "
                        "zero in too short a craft), so this row would be released unchanged. Craft the noise on "
                        "data with rows of every class (with more rounds: min_iters=), or leave these rows out.")
                st = self.steps[y]
            else:
                j = self._index.get(ids[i])
                if j is None:
                    raise ProtectionError(
                        f"{row_in_batch(i, indices)} (id {ids[i]!r}): this row has no noise. Sample-wise noise is "
                        "keyed by row id "
                        "(the 'id' column, else a hash of the original pixels): apply it to the same, unmodified "
                        "images it was crafted on, or craft noise for this dataset.")
                st = self.steps[j]
            out.append(st)
        return out

    # -- persistence --------------------------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write config.json + noise.safetensors atomically (a temp dir renamed into place)."""
        from safetensors.numpy import save_file

        with atomic_dir(save_directory) as tmp:
            tensors = {"steps": np.ascontiguousarray(self.steps)}
            if self.ids is not None:
                tensors["ids"], tensors["id_lengths"] = _encode_ids(self.ids)
            if self.centroids is not None:
                tensors["centroids"] = np.ascontiguousarray(self.centroids, dtype=np.float32)
            save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "hf_unlearnable.noise"})
            (tmp / CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=2, sort_keys=True))
        return Path(save_directory)

    @classmethod
    def from_pretrained(cls, pretrained_noise_name_or_path: str | os.PathLike, *, revision: str | None = None,
                        token: str | bool | None = None, cache_dir: str | os.PathLike | None = None,
                        force_download: bool = False, local_files_only: bool = False) -> "Noise":
        """Load from a local folder or a Hub repo ("user/name", at `revision`): config.json + noise.safetensors.

        Never unpickles anything: pickle files in the folder or repo are not even read, and a repo that has only
        pickles is refused with an error that names them.
        """
        folder, cfg_dict = fetch_artefact(pretrained_noise_name_or_path, WEIGHTS_NAME, "noise", revision=revision,
                                          token=token, cache_dir=cache_dir, force_download=force_download,
                                          local_files_only=local_files_only)
        if "kind" not in cfg_dict or "method" not in cfg_dict:
            raise ProtectionError(f"noise {str(pretrained_noise_name_or_path)!r}: its {CONFIG_NAME} is not a noise "
                                  "config (no 'method'/'kind'); is it a model repo?")
        what = f"noise {str(pretrained_noise_name_or_path)!r}"
        cfg = config_from_dict(NoiseConfig, cfg_dict, what)
        tensors = read_safetensors(folder / WEIGHTS_NAME, what, ("steps",))
        ids = _decode_ids(tensors["ids"], tensors.get("id_lengths")) if "ids" in tensors else None
        try:
            return cls(tensors["steps"], cfg, ids, tensors.get("centroids"))
        except (TypeError, ValueError) as exc:   # e.g. epsilon or image_shape of the wrong type
            raise ProtectionError(f"{what}: its {CONFIG_NAME} does not describe its {WEIGHTS_NAME} ({exc}); the "
                                  "folder is damaged: save or download it again.") from None

    def push_to_hub(self, repo_id: str, *, commit_message: str | None = None, private: bool | None = None,
                    token: str | bool | None = None, branch: str | None = None, create_pr: bool = False,
                    license: str | None = None, overwrite_card: bool = False):
        """Upload config.json + noise.safetensors + a card (model_cards/noise_card.md) to a model repo.

        The repo is created if needed. An existing README.md is kept unless `overwrite_card=True`. `token` is used
        for the request only and never written anywhere. Returns huggingface_hub's CommitInfo.
        """
        return push_artefact(self.save_pretrained, self.card(repo_id, license=license, revision=branch), repo_id,
                             what=f"{self.method} {self.kind} noise", commit_message=commit_message,
                             private=private, token=token, branch=branch, create_pr=create_pr,
                             overwrite_card=overwrite_card)

    def card(self, repo_id: str = "<user>/<repo>", *, license: str | None = None, revision: str | None = None) -> str:
        """The model card (README.md) for this noise, rendered from model_cards/noise_card.md."""
        c = self.config
        src = c.source or {}
        dataset = src.get("dataset_id") or src.get("dataset")
        desc = ", ".join(f"{k} {v}" for k, v in (("dataset", dataset), ("config", src.get("config")),
                                                 ("split", src.get("split")), ("revision", src.get("revision")))
                         if v) or "not recorded"
        front = {"library_name": "hf_unlearnable", "license": license,
                 "tags": ["hf_unlearnable", "unlearnable-examples", "availability-poisoning", c.method,
                          f"{c.kind}-noise"],
                 "datasets": [src["dataset_id"]] if src.get("dataset_id") else None}
        kind_desc = ("Class-wise noise (one pattern per class, applied by label)" if c.kind == "classwise" else
                     "Sample-wise noise (one pattern per image, applied by row id)")
        rows = f"{len(self)} classes" if c.kind == "classwise" else f"{len(self)} rows"
        return render_card("noise_card.md", front,
                           title=f"{c.method} {c.kind} noise, ε = {c.epsilon_255}" + (f", {dataset}" if dataset else ""),
                           kind_description=kind_desc, rows_description=rows, method=c.method, kind=c.kind,
                           epsilon=c.epsilon, epsilon_255=c.epsilon_255, image_shape=tuple(c.image_shape),
                           seed=c.seed, source_description=desc, library_version=c.library_version,
                           class_names=c.class_names, clustering=c.clustering, repo_id=repo_id, revision=revision, num_rows=len(self),
                           method_config=json.dumps(c.method_config, indent=2, sort_keys=True, default=str),
                           stats=json.dumps(c.stats, indent=2, sort_keys=True, default=str) if c.stats else "")


def _encode_ids(ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 bytes padded with zeros, and each id's length: an id may itself end in NUL bytes."""
    raw = [s.encode("utf-8") for s in ids]
    width = max((len(b) for b in raw), default=1)
    out = np.zeros((len(raw), width), dtype=np.uint8)
    for i, b in enumerate(raw):
        out[i, :len(b)] = np.frombuffer(b, dtype=np.uint8)
    return out, np.array([len(b) for b in raw], dtype=np.int64)


def _decode_ids(arr: np.ndarray, lengths: np.ndarray | None) -> list[str]:
    damaged = "the file is damaged: save or download it again."
    if arr.ndim != 2 or arr.dtype != np.uint8:
        raise ProtectionError(f"noise.safetensors: its ids are {arr.dtype} {arr.shape}, not uint8 rows; {damaged}")
    if lengths is None:      # written before the lengths were stored (ids ending in NUL lost it there)
        rows = [bytes(row).rstrip(b"\x00") for row in arr]
    elif lengths.shape != (len(arr),) or (lengths < 0).any() or (lengths > arr.shape[1]).any():
        raise ProtectionError(f"noise.safetensors: id_lengths {lengths.shape} does not fit its ids {arr.shape}; "
                              f"{damaged}")
    else:
        rows = [bytes(row[:n]) for row, n in zip(arr, lengths.tolist())]
    try:
        return [b.decode("utf-8") for b in rows]
    except UnicodeDecodeError:
        raise ProtectionError(f"noise.safetensors: its ids are not UTF-8; {damaged}") from None


def load_noise(path_or_repo_id: str | os.PathLike, *, revision: str | None = None, token: str | bool | None = None,
               **kwargs: Any) -> Noise:
    """Load a Noise from a local folder or a Hub repo ("user/name", optionally at `revision`): safetensors only."""
    return Noise.from_pretrained(path_or_repo_id, revision=revision, token=token, **kwargs)
