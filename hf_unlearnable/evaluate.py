"""evaluate(): train victims and report clean-test accuracy, honestly.

For each defence: the clean data (when `clean=` is given), and for each mix ratio r the mix (a seeded r share
of rows replaced by their protected twins) beside its clean-only control (the (1 - r) clean rows alone, methods.md
§6.13). Without that control a mix result means nothing. One victim trainer (training.fit) serves every run.
"""

from __future__ import annotations

import copy
import platform
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ._data import LabelledImages, check_same_task, load_labelled
from ._images import MAX_EPSILON, check_seed, working_size
from ._report import PROTOCOLS, Report
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
    # protocol="finetune": after pre-training, this many epochs on the fine-tuning rows, cosine from this peak lr
    # (the BEO authors' cifar10-ft.py: 5 epochs; 0.01 is a tenth of the victim's own peak, benchmarks/finetune.py)
    finetune_epochs: int = 5
    finetune_lr: float = 0.01

    @classmethod
    def auto(cls, epochs: int | None = None) -> "VictimConfig":
        """ResNet-18 with the papers' 60 epochs when CUDA is present; else the CPU-fast ConvNet, 30 epochs."""
        if torch.cuda.is_available():
            return cls("resnet18", 64, TrainConfig(epochs=epochs or 60, batch_size=128, lr=0.1,
                                                    label_smoothing=0.0, warmup=0.15))
        return cls("convnet", None, TrainConfig(epochs=epochs or 30))

    def to_dict(self) -> dict:
        return {"arch": self.arch, "width": self.width, "train": self.train.to_dict(),
                "finetune_epochs": self.finetune_epochs, "finetune_lr": self.finetune_lr}


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
        unknown = sorted(set(victim) - {"arch", "width", "train", "finetune_epochs", "finetune_lr"})
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
        cfg = VictimConfig(victim.get("arch", "convnet"), width, train, victim.get("finetune_epochs", 5),
                           victim.get("finetune_lr", 0.01))
    else:
        raise ProtectionError(f"victim={victim!r}: pass None (auto), an architecture name, a dict or a VictimConfig.")
    if epochs is not None:
        cfg = VictimConfig(cfg.arch, cfg.width, TrainConfig(**{**cfg.train.to_dict(), "epochs": int(epochs)}),
                           cfg.finetune_epochs, cfg.finetune_lr)
    if isinstance(cfg.finetune_epochs, bool) or not isinstance(cfg.finetune_epochs, (int, np.integer)) \
            or cfg.finetune_epochs < 1:
        raise ProtectionError(f"finetune_epochs={cfg.finetune_epochs!r} must be a positive integer.")
    if isinstance(cfg.finetune_lr, bool) or not isinstance(cfg.finetune_lr, (int, float)) \
            or not 0 < cfg.finetune_lr <= 10:
        raise ProtectionError(f"finetune_lr={cfg.finetune_lr!r} must be a learning rate in (0, 10].")
    build(cfg.arch, 2, cfg.width)  # fail early on an unknown architecture
    return cfg


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
    # the same rows before protection: most rows no further from their protected twin than the largest L-inf budget
    # in every pixel, or (L2 / L0 budgets: a few pixels moved far) than 8/255 on average. A median, so a release that
    # went through lossy re-encoding still passes; other images are far on every row.
    limit = round(MAX_EPSILON * 255)
    near = np.empty(len(clean), dtype=bool)
    for s in range(0, len(clean), 1000):          # 1,000 rows at a time
        diff = np.abs(protected.images[s:s + 1000].astype(np.int16) - clean.images[s:s + 1000])
        diff = diff.reshape(len(diff), -1)
        near[s:s + len(diff)] = (diff.max(1) <= limit) | (diff.mean(1) <= 8)
    if near.mean() < 0.5:
        far = np.flatnonzero(~near)
        raise ProtectionError(f"clean= does not hold the rows the protected data was made from: {len(far)} of "
                              f"{len(near)} rows (first: row {int(far[0])}) differ from their protected twin by more "
                              f"than any protection budget ({limit}/255 in some pixel, 8/255 on average). Pass the "
                              "unprotected dataset, row for row in the same order.")


def mix_rows(n: int, ratio: float, seed: int) -> np.ndarray:
    """The rows a mix of `ratio` protects (boolean mask over n rows): a seeded choice of round(ratio * n) rows."""
    k = int(round(ratio * n))
    if k == 0 or k == n:
        raise ProtectionError(f"mix ratio {ratio} of {n} rows protects {k} rows: the mix or its clean-only control "
                              "would be empty. Use a ratio that leaves rows on both sides, or 1.0.")
    chosen = np.zeros(n, dtype=bool)
    chosen[np.random.default_rng(seed).permutation(n)[:k]] = True
    return chosen


def evaluate(protected: Any, test: Any, *, clean: Any = None, mix: Sequence[float] | None = None,
             defences: Sequence[str] = ("none",), victim: Any = None, epochs: int | None = None, seed: int = 0,
             image_column: str | None = None, label_column: str | None = None, progress: bool = True,
             baselines: bool = True, resolution: int | tuple[int, int] | None = None,
             protocol: str = "scratch") -> Report:
    """Train victims on protected (and mixed) data and report their accuracy on the clean test set.

    `mix`: shares r in (0, 1] of the rows that are protected (default [1.0]; [0.5] under protocol="finetune"); r < 1
    needs `clean=` (the same rows, unprotected). `defences`: names in defences.DEFENCES. `victim`: None (ResNet-18 on
    CUDA, else the CPU ConvNet), an architecture name, a dict or a VictimConfig. Seeds are fixed and reported: `seed`
    picks the protected rows of each mix and seeds every victim. `resolution` (an int side or (h, w), default 32):
    every image (any size and mode) is resized to it, as a scraper's pipeline does, before victims train and test.

    `protocol="scratch"`: every victim trains from scratch: the clean data, the protected data (r = 1), and for each
    r < 1 the mix beside its clean-only control (the (1 - r) clean rows alone). `protocol="finetune"` (the threat of
    someone fine-tuning a model on scraped data): for each r < 1, a victim pre-trained on the (1 - r) clean rows is
    fine-tuned on the other r rows, once protected and once clean, and reported beside the pre-trained victim alone
    (VictimConfig.finetune_epochs / finetune_lr). `baselines=False` skips what depends only on `clean`, `mix` and
    `seed` (the clean victim, the clean-only controls, the clean fine-tune), so several methods compared on the same
    rows can share one set of baselines.

    A victim trained on clean data that sits at chance level (accuracy within 5 points of 1/K) is flagged in the
    Report's `warnings`: the protection numbers beside it then say nothing.
    """
    t_start = time.perf_counter()
    if protocol not in PROTOCOLS:
        raise ProtectionError(f"protocol={protocol!r}: choose one of {sorted(PROTOCOLS)} ('scratch' trains every "
                              "victim from scratch; 'finetune' pre-trains on clean rows, then fine-tunes).")
    finetune = protocol == "finetune"
    if mix is None:
        mix = [0.5] if finetune else [1.0]
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
        if finetune and r == 1:
            raise ProtectionError("protocol='finetune' with mix ratio 1.0 leaves no clean rows to pre-train on: use "
                                  "ratios below 1 (e.g. mix=[0.5]), the share of rows the victim fine-tunes on.")
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
        needs = "protocol='finetune'" if finetune else "a mix ratio below 1"
        raise ProtectionError(f"{needs} needs clean=<the unprotected dataset> to build the mix and its clean-only "
                              "control.")
    check_same_task(P, T)
    num_classes = P.num_classes

    rows = []
    for dname, dfn in defence_fns.items():
        test_x, test_y = nchw(dfn(T.images)), torch.from_numpy(T.labels)
        train_cfg = TrainConfig(**{**cfg.train.to_dict(), **TRAINING_OPTIONS.get(dname, {})})

        def train(train_set: str, r: float, images: np.ndarray, labels: np.ndarray, model=None, tcfg=train_cfg,
                  schedule: str = "onecycle") -> torch.nn.Module:
            if model is None:
                torch.manual_seed(seed)  # initial weights too: a victim must not depend on what ran before it
                model = build(cfg.arch, num_classes, cfg.width)
            hist = fit(model, nchw(dfn(images)), torch.from_numpy(labels), tcfg, seed=seed, progress=progress,
                       desc=f"victim [{dname}] {train_set} r={r:.2f}", schedule=schedule)
            rows.append({"defence": dname, "train_set": train_set, "ratio": r, "n_train": int(len(labels)),
                         "test_accuracy": accuracy(model, test_x, test_y), "train_accuracy": hist["train_accuracy"],
                         "seconds": round(hist["seconds"], 1)})
            return model

        if finetune:
            ft_cfg = TrainConfig(**{**train_cfg.to_dict(), "epochs": cfg.finetune_epochs, "lr": cfg.finetune_lr})
            for r in ratios:
                chosen = mix_rows(len(P), r, seed)
                base = train("pre-trained", r, C.images[~chosen], C.labels[~chosen])
                start = copy.deepcopy(base.state_dict())
                sets = [("fine-tuned on protected", P)] + ([("fine-tuned on clean", C)] if baselines else [])
                for name, source in sets:
                    base.load_state_dict(start)
                    train(name, r, source.images[chosen], source.labels[chosen], model=base, tcfg=ft_cfg,
                          schedule="cosine")
            control_set = "pre-trained"
        else:
            if C is not None and baselines:
                train("clean", 0.0, C.images, C.labels)
            for r in ratios:
                if r == 1.0:
                    train("protected", 1.0, P.images, P.labels)
                    continue
                chosen = mix_rows(len(P), r, seed)
                train("mix", r, np.where(chosen[:, None, None, None], P.images, C.images), P.labels)
                if baselines:
                    train("clean-only control", r, C.images[~chosen], C.labels[~chosen])
            control_set = "clean-only control"
        for row in rows:
            if row["defence"] == dname and row["train_set"] in ("mix", "fine-tuned on protected",
                                                                "fine-tuned on clean"):
                ctrl = next((c for c in rows if c["defence"] == dname and c["train_set"] == control_set
                             and c["ratio"] == row["ratio"]), None)
                if ctrl is not None:
                    row["minus_control"] = row["test_accuracy"] - ctrl["test_accuracy"]
    from ._version import __version__

    chance = 1 / num_classes
    warnings = []
    for row in rows:
        if row["train_set"] in ("clean", "clean-only control", "pre-trained"):
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
                  sizes={"train": len(P), "test": len(T), "num_classes": num_classes}, environment=env,
                  seconds=round(time.perf_counter() - t_start, 1), resolution=list(size), warnings=warnings,
                  protocol=protocol)
