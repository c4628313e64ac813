"""evaluate(): train victims and report clean-test accuracy, honestly.

For each defence: the clean data (when `clean=` is given), and for each mix ratio r the mix (a seeded r share
of rows replaced by their protected twins) beside its clean-only control (the (1 - r) clean rows alone, methods.md
§6.13). Without that control a mix result means nothing. One victim trainer (training.fit) serves every run.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ._data import LabelledImages, check_same_task, load_labelled
from ._images import MAX_EPSILON, check_seed, working_size
from .defences import TRAINING_OPTIONS, get_defence
from .errors import ProtectionError
from .surrogates.nets import build, check_size
from .training import TrainConfig, accuracy, device, fit, nchw


@dataclass
class VictimConfig:
    """The victim network and how it is trained."""

    arch: str = "convnet"
    width: int | None = None
    train: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def auto(cls, epochs: int | None = None) -> "VictimConfig":
        """ResNet-18 with the papers' 60 epochs when CUDA is present; else the CPU-fast ConvNet, 30 epochs."""
        if torch.cuda.is_available():
            return cls("resnet18", 64, TrainConfig(epochs=epochs or 60, batch_size=128, lr=0.1,
                                                    label_smoothing=0.0, warmup=0.15))
        return cls("convnet", None, TrainConfig(epochs=epochs or 30))

    def to_dict(self) -> dict:
        return {"arch": self.arch, "width": self.width, "train": self.train.to_dict()}


def _victim(victim: Any, epochs: int | None) -> VictimConfig:
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1):
        raise ProtectionError(f"epochs={epochs!r} must be a positive integer (or None for the victim's default).")
    if victim is None:
        return VictimConfig.auto(epochs)
    if isinstance(victim, VictimConfig):
        cfg = victim
    elif isinstance(victim, str):
        cfg = VictimConfig(arch=victim)
        if victim == "resnet18":
            cfg.width = 64
    elif isinstance(victim, dict):
        unknown = sorted(set(victim) - {"arch", "width", "train"})
        try:
            if unknown:
                raise TypeError(f"unknown key(s) {unknown}")
            train = TrainConfig(**victim.get("train", {}))
        except (TypeError, ValueError) as exc:
            raise ProtectionError(f"victim={victim!r}: {exc}. The dict takes 'arch', 'width' and 'train' (the "
                                  f"fields of training.TrainConfig: {sorted(TrainConfig.__dataclass_fields__)}).") \
                from None
        width = victim.get("width")
        check_size(width, 1, "victim ")
        cfg = VictimConfig(victim.get("arch", "convnet"), width, train)
    else:
        raise ProtectionError(f"victim={victim!r}: pass None (auto), an architecture name, a dict or a VictimConfig.")
    if epochs is not None:
        cfg = VictimConfig(cfg.arch, cfg.width, TrainConfig(**{**cfg.train.to_dict(), "epochs": int(epochs)}))
    build(cfg.arch, 2, cfg.width)  # fail early on an unknown architecture
    return cfg


@dataclass
class Report:
    """Victim accuracies with everything needed to read and reproduce them."""

    rows: list[dict]
    victim: dict
    seed: int
    sizes: dict
    environment: dict
    seconds: float = 0.0
    resolution: list[int] | None = None    # the working size victims trained and were tested at (h, w)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self, path: str | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            from ._artefacts import write_text_atomic

            write_text_atomic(path, text)   # whole or not at all
        return text

    def accuracy(self, train_set: str, ratio: float | None = None, defence: str = "none") -> float:
        """The test accuracy of one run, e.g. report.accuracy("mix", 0.5)."""
        for r in self.rows:
            if r["train_set"] == train_set and r["defence"] == defence and (ratio is None or
                                                                            abs(r["ratio"] - ratio) < 1e-9):
                return r["test_accuracy"]
        raise KeyError(f"no run {train_set!r} r={ratio} defence={defence!r} in this report")

    def to_markdown(self) -> str:
        t = self.victim["train"]
        lines = [
            f"Victim: {self.victim['arch']}, {t['epochs']} epochs, batch {t['batch_size']}, "
            f"{'crop+flip' if t['augment'] else 'no augmentation'}; seed {self.seed}; "
            f"{self.sizes['train']} train / {self.sizes['test']} test images"
            + (f" at {self.resolution[0]}x{self.resolution[1]}" if self.resolution else "")
            + f"; device {self.environment['device']}.",
            "",
            *[f"**Warning:** {w}" for w in self.warnings],
            *([""] if self.warnings else []),
            "| defence | training set | protected share r | train images | test accuracy | vs clean-only control |",
            "|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            gap = r.get("minus_control")
            lines.append(
                f"| {r['defence']} | {r['train_set']} | {r['ratio']:.2f} | {r['n_train']} | "
                f"{100 * r['test_accuracy']:.2f} % | {'' if gap is None else f'{100 * gap:+.2f} pts'} |")
        return "\n".join(lines)


def _aligned(protected: LabelledImages, clean: LabelledImages) -> None:
    if len(protected) != len(clean):
        raise ProtectionError(f"clean= has {len(clean)} rows but the protected data has {len(protected)}: pass the "
                              "clean dataset the protected one was made from, row for row.")
    if not np.array_equal(protected.labels, clean.labels):
        bad = int(np.flatnonzero(protected.labels != clean.labels)[0])
        raise ProtectionError(f"row {bad}: label differs between protected ({protected.labels[bad]}) and clean "
                              f"({clean.labels[bad]}) data; they must be the same rows in the same order.")
    if protected.images.shape != clean.images.shape:
        raise ProtectionError(f"image shapes differ: protected {protected.images.shape[1:]}, clean "
                              f"{clean.images.shape[1:]}.")
    # the same rows before protection: most rows no further from their protected twin than the largest budget (a
    # median, so a release that went through lossy re-encoding still passes; other images are far on every row)
    limit = round(MAX_EPSILON * 255)
    gaps = np.empty(len(clean), dtype=np.int16)      # each row's largest pixel change, 1,000 rows at a time
    for s in range(0, len(clean), 1000):
        diff = np.abs(protected.images[s:s + 1000].astype(np.int16) - clean.images[s:s + 1000])
        gaps[s:s + len(diff)] = diff.reshape(len(diff), -1).max(1)
    if np.median(gaps) > limit:
        far = np.flatnonzero(gaps > limit)
        raise ProtectionError(f"clean= does not hold the rows the protected data was made from: {len(far)} of "
                              f"{len(gaps)} rows (first: row {int(far[0])}) differ from their protected twin by more "
                              f"than any protection budget ({limit}/255) in some pixel. Pass the unprotected dataset, "
                              "row for row in the same order.")


def mix_rows(n: int, ratio: float, seed: int) -> np.ndarray:
    """The rows a mix of `ratio` protects (boolean mask over n rows): a seeded choice of round(ratio * n) rows."""
    k = int(round(ratio * n))
    if k == 0 or k == n:
        raise ProtectionError(f"mix ratio {ratio} of {n} rows protects {k} rows: the mix or its clean-only control "
                              "would be empty. Use a ratio that leaves rows on both sides, or 1.0.")
    chosen = np.zeros(n, dtype=bool)
    chosen[np.random.default_rng(seed).permutation(n)[:k]] = True
    return chosen


def evaluate(protected: Any, test: Any, *, clean: Any = None, mix: Sequence[float] = (1.0,),
             defences: Sequence[str] = ("none",), victim: Any = None, epochs: int | None = None, seed: int = 0,
             image_column: str | None = None, label_column: str | None = None, progress: bool = True,
             baselines: bool = True, resolution: int | tuple[int, int] | None = None) -> Report:
    """Train victims on protected (and mixed) data and report their accuracy on the clean test set.

    `mix`: shares r in (0, 1] of the rows that are protected; r < 1 needs `clean=` (the same rows, unprotected)
    and trains both the mix and the clean-only control. `defences`: names in defences.DEFENCES. `victim`: None
    (ResNet-18 on CUDA, else the CPU ConvNet), an architecture name, or a VictimConfig. Seeds are fixed and
    reported: `seed` picks the protected rows of each mix and seeds every victim. `baselines=False` skips the
    clean victim and the clean-only controls (they depend only on `clean`, `mix` and `seed`, so several methods
    compared on the same rows can share one set of baselines). `resolution` (an int side or (h, w), default 32):
    every image (any size and mode) is resized to it, as a scraper's pipeline does, before victims train and test.
    A victim trained on clean data that sits at chance level (accuracy within 5 points of 1/K) is flagged in the
    Report's `warnings`: the protection numbers beside it then say nothing.
    """
    t_start = time.perf_counter()
    if isinstance(mix, (int, float, np.number)) and not isinstance(mix, bool):
        mix = [mix]
    if not isinstance(mix, (list, tuple, np.ndarray)) or len(mix) == 0:
        raise ProtectionError(f"mix={mix!r} must be a share in (0, 1] or a non-empty list of them, e.g. mix=[1.0, "
                              "0.5].")
    if isinstance(defences, str):
        defences = [defences]
    if not isinstance(defences, (list, tuple)) or not defences:
        raise ProtectionError(f"defences={defences!r} must be a defence name or a non-empty list of them, e.g. "
                              "['none', 'jpeg10'].")
    try:
        ratios = [float(r) for r in mix]
    except (TypeError, ValueError):
        raise ProtectionError(f"mix={mix!r} must be a list of shares in (0, 1], e.g. mix=[1.0, 0.5].") from None
    for r in ratios:
        if not 0 < r <= 1:
            raise ProtectionError(f"mix ratio {r} must be in (0, 1]: the share of rows that are protected.")
    seed = check_seed(seed)
    defence_fns = {d: get_defence(d) for d in defences}
    cfg = _victim(victim, epochs)
    size = working_size(resolution)
    kw = dict(image_column=image_column, label_column=label_column, resolution=size)
    P = load_labelled(protected, desc="Reading protected", **kw)
    T = load_labelled(test, desc="Reading test", defines_classes=False, **kw)
    C = load_labelled(clean, desc="Reading clean", defines_classes=False, **kw) if clean is not None else None
    if C is not None:
        _aligned(P, C)
    elif any(r < 1 for r in ratios):
        raise ProtectionError("a mix ratio below 1 needs clean=<the unprotected dataset> to build the mix and its "
                              "clean-only control.")
    check_same_task(P, T)
    num_classes = P.num_classes

    n = len(P)
    runs: list[tuple[str, float, np.ndarray, np.ndarray]] = []   # (train_set, r, images, labels)
    if C is not None and baselines:
        runs.append(("clean", 0.0, C.images, C.labels))
    for r in ratios:
        if r == 1.0:
            runs.append(("protected", 1.0, P.images, P.labels))
            continue
        chosen = mix_rows(n, r, seed)
        images = np.where(chosen[:, None, None, None], P.images, C.images)
        runs.append(("mix", r, images, P.labels))
        if baselines:
            runs.append(("clean-only control", r, C.images[~chosen], C.labels[~chosen]))

    rows = []
    for dname, dfn in defence_fns.items():
        test_x = nchw(dfn(T.images))
        test_y = torch.from_numpy(T.labels)
        train_cfg = TrainConfig(**{**cfg.train.to_dict(), **TRAINING_OPTIONS.get(dname, {})})
        for train_set, r, images, labels in runs:
            x = nchw(dfn(images))
            torch.manual_seed(seed)  # initial weights too: a victim must not depend on what ran before it
            model = build(cfg.arch, num_classes, cfg.width)
            hist = fit(model, x, torch.from_numpy(labels), train_cfg, seed=seed, progress=progress,
                       desc=f"victim [{dname}] {train_set} r={r:.2f}")
            rows.append({"defence": dname, "train_set": train_set, "ratio": r, "n_train": int(len(labels)),
                         "test_accuracy": accuracy(model, test_x, test_y), "train_accuracy": hist["train_accuracy"],
                         "seconds": round(hist["seconds"], 1)})
        for row in rows:
            if row["defence"] == dname and row["train_set"] == "mix":
                ctrl = next((c for c in rows if c["defence"] == dname and c["train_set"] == "clean-only control"
                             and c["ratio"] == row["ratio"]), None)
                if ctrl is not None:
                    row["minus_control"] = row["test_accuracy"] - ctrl["test_accuracy"]
    from ._version import __version__

    chance = 1 / num_classes
    warnings = []
    for row in rows:
        if row["train_set"] in ("clean", "clean-only control"):
            row["at_chance"] = row["test_accuracy"] <= chance + 0.05
            if row["at_chance"]:
                warnings.append(f"the victim trained on clean data ({row['train_set']}, r={row['ratio']:.2f}, defence "
                                f"{row['defence']}) sits at chance level ({100 * row['test_accuracy']:.1f} % for "
                                f"{num_classes} classes): it learns nothing here, so the protected rows beside it "
                                "prove nothing. Train longer (epochs=), on more rows, or at another resolution=.")
    if C is None and not any(r["train_set"] in ("clean", "clean-only control") for r in rows):
        warnings.append("no victim trained on clean data (pass clean=): whether this victim can learn the task at "
                        "all is not measured.")
    env = {"device": str(device()), "torch": torch.__version__, "hf_unlearnable": __version__,
           "python": platform.python_version(), "threads": torch.get_num_threads()}
    return Report(rows=rows, victim=cfg.to_dict(), seed=seed,
                  sizes={"train": n, "test": len(T), "num_classes": num_classes}, environment=env,
                  seconds=round(time.perf_counter() - t_start, 1), resolution=list(size), warnings=warnings)
