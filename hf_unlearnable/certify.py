"""(q, eta)-learnability certificates and the weight-recovery attack of Provably Unlearnable Examples.

Wang, Xue, Li, Camtepe, Zhu, "Provably Unlearnable Data Examples", NDSS 2025 (arXiv 2405.03316); spec:
methods.md §3.1-§3.4.

certify(): train theta-hat on the protected data (the same victim trainer as `evaluate`, or take `model=`), draw n
Gaussian weight perturbations sigma*N(0, I) over every named parameter (BN running statistics untouched), measure
clean test accuracy for each, and bound the q-quantile of the smoothed accuracy over the whole L2 ball B(theta-hat,
eta): q_bar = Phi(Phi^-1(q) + eta/sigma), and the certified learnability is the k-th smallest accuracy, k the
smallest index in [ceil(q_bar n), n] with BinomCDF(k - 1; n, q_bar) > confidence (the distribution-free
order-statistic bound, not Clopper-Pearson). Where no such k exists the certificate abstains.

recover(): fine-tune from theta-hat on a small clean set, projecting theta back onto the eta-*sphere* around
theta-hat after every step (§3.4, §6.9), and report test accuracy against eta.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ._data import check_same_task, load_labelled
from ._images import check_seed, working_size
from .errors import ProtectionError
from .evaluate import _victim
from .surrogates.nets import build
from .training import TrainConfig, accuracy, fit

DEFAULT_ETAS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0)
DEFAULT_RECOVERY_ETAS = tuple(round(0.2 * i, 1) for i in range(1, 11))


def order_statistic_k(n: int, q_bar: float, confidence: float) -> int | None:
    """Smallest k in [ceil(q_bar n), n] with BinomCDF(k - 1; n, q_bar) > confidence, or None (abstain).

    P(a_(k) >= Q_{q_bar}) = BinomCDF(k - 1; n, q_bar), so the k-th smallest of n draws upper-bounds the q_bar
    quantile with that confidence.
    """
    from scipy.stats import binom

    start = max(1, math.ceil(q_bar * n - 1e-9))
    ks = np.arange(start, n + 1)
    if len(ks) == 0:
        return None
    ok = np.flatnonzero(binom.cdf(ks - 1, n, q_bar) > confidence)
    return int(ks[ok[0]]) if len(ok) else None


def certified_learnability(accuracies: Sequence[float], *, q: float, sigma: float, etas: Sequence[float],
                           confidence: float = 0.99) -> list[dict]:
    """One entry per eta: q_bar, k, and the certified learnability (None where the bound abstains)."""
    from scipy.stats import norm

    a = np.sort(np.asarray(accuracies, dtype=np.float64))
    n = len(a)
    out = []
    for eta in etas:
        q_bar = float(norm.cdf(norm.ppf(q) + float(eta) / sigma))
        k = order_statistic_k(n, q_bar, confidence)
        out.append({"eta": float(eta), "q_bar": q_bar, "k": k,
                    "learnability": None if k is None else float(a[k - 1])})
    return out


def _number(name: str, value: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value):
        raise ProtectionError(f"{name}={value!r} must be a finite number.")
    return float(value)


def _etas(etas: Any, positive: bool = False) -> tuple[float, ...]:
    """A non-empty sequence of finite radii, >= 0 (> 0 with `positive`)."""
    if isinstance(etas, (str, bytes)) or not hasattr(etas, "__iter__"):
        raise ProtectionError(f"etas={etas!r} must be a list of radii, e.g. etas=[0.5, 1.0].")
    out = tuple(_number("eta", e) for e in etas)
    if not out:
        raise ProtectionError("etas=[] is empty: give at least one radius.")
    if any(e < 0 or (positive and e == 0) for e in out):
        raise ProtectionError(f"etas={list(out)} must be {'positive' if positive else 'non-negative'}.")
    return out


def _check(q: float, sigma: float, n: int, confidence: float, etas: Sequence[float]) -> None:
    for name, value in (("q", q), ("sigma", sigma), ("confidence", confidence)):
        _number(name, value)
    if not 0 < q < 1:
        raise ProtectionError(f"q={q} must be in (0, 1).")
    if not sigma > 0:
        raise ProtectionError(f"sigma={sigma} must be positive.")
    if isinstance(n, bool) or not (isinstance(n, int) and n >= 1):
        raise ProtectionError(f"n={n} must be a positive integer (the paper uses 1000).")
    if not 0 < confidence < 1:
        raise ProtectionError(f"confidence={confidence} must be in (0, 1).")


@dataclass
class Certificate:
    """Certified (q, eta)-learnability of a model trained on protected data (lower = stronger protection)."""

    q: float
    sigma: float
    n: int
    confidence: float
    base_accuracy: float
    entries: list[dict]
    accuracies: list[float] = field(repr=False, default_factory=list)
    victim: dict = field(default_factory=dict)
    seed: int = 0
    sizes: dict = field(default_factory=dict)
    seconds: float = 0.0

    def learnability(self, eta: float) -> float | None:
        for e in self.entries:
            if abs(e["eta"] - eta) < 1e-12:
                return e["learnability"]
        raise KeyError(f"eta={eta} is not in this certificate")

    def to_dict(self) -> dict:
        return asdict(self)

    def to_markdown(self) -> str:
        lines = [f"Certified (q={self.q}, eta)-learnability, sigma={self.sigma}, n={self.n}, confidence "
                 f"{self.confidence}; accuracy of theta-hat {100 * self.base_accuracy:.2f} %; median smoothed accuracy "
                 f"{100 * float(np.median(self.accuracies)):.2f} %.", "",
                 "| eta | q_bar | k | certified learnability |", "|---|---|---|---|"]
        for e in self.entries:
            ell = "abstain" if e["learnability"] is None else f"{100 * e['learnability']:.2f} %"
            lines.append(f"| {e['eta']:g} | {e['q_bar']:.4f} | {e['k'] if e['k'] is not None else '-'} | {ell} |")
        return "\n".join(lines)


def _tensors(data) -> tuple[torch.Tensor, torch.Tensor]:
    from .training import nchw

    return nchw(data.images), torch.from_numpy(data.labels)


@torch.no_grad()
def smoothed_accuracies(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, sigma: float, n: int,
                        seed: int = 0, progress: bool = True) -> np.ndarray:
    """Test accuracy of theta-hat + sigma*N(0, I) for n draws over all named parameters (not BN buffers)."""
    from tqdm.auto import tqdm

    from ._progress import progress_bars

    params = [p for _, p in model.named_parameters()]
    saved = [p.detach().clone() for p in params]
    gen = torch.Generator().manual_seed(seed)
    out = np.empty(n)
    try:
        for i in tqdm(range(n), desc="certify: weight draws", disable=not (progress and progress_bars()),
                      leave=False):
            for p, s in zip(params, saved):
                p.copy_(s + sigma * torch.randn(s.shape, generator=gen).to(s.device))
            out[i] = accuracy(model, images, labels)
    finally:
        for p, s in zip(params, saved):
            p.copy_(s)
    return out


def train_theta_hat(protected: Any, *, victim: Any = None, epochs: int | None = None, seed: int = 0,
                    image_column: str | None = None, label_column: str | None = None, progress: bool = True,
                    resolution: int | tuple[int, int] | None = None) -> nn.Module:
    """theta-hat: the victim trainer of `evaluate` run on the protected data (any size, at `resolution`, default
    32), as `certify` trains it; what `recover` attacks."""
    P = load_labelled(protected, image_column=image_column, label_column=label_column, desc="Reading protected",
                      resolution=working_size(resolution))
    return _train_theta_hat(P, victim, epochs, check_seed(seed), progress)[0]


def _train_theta_hat(P, victim: Any, epochs: int | None, seed: int, progress: bool):
    cfg = _victim(victim, epochs)
    torch.manual_seed(seed)
    model = build(cfg.arch, P.num_classes, cfg.width)
    x, y = _tensors(P)
    fit(model, x, y, cfg.train, seed=seed, progress=progress, desc="certify: training theta-hat")
    return model, cfg


def certify(protected: Any, test: Any, *, q: float = 0.9, sigma: float = 0.25, n: int = 1000,
            confidence: float = 0.99, etas: Sequence[float] | None = None, model: nn.Module | None = None,
            seed: int = 0, victim: Any = None, epochs: int | None = None, image_column: str | None = None,
            label_column: str | None = None, progress: bool = True,
            resolution: int | tuple[int, int] | None = None) -> Certificate:
    """Certify the (q, eta)-learnability of protected data (see the module docstring). Images of any size are
    resized to `resolution` (default 32), as in `evaluate`."""
    etas = DEFAULT_ETAS if etas is None else _etas(etas)
    _check(q, sigma, n, confidence, etas)
    seed = check_seed(seed)
    if model is not None and not isinstance(model, nn.Module):
        raise ProtectionError(f"model={model!r} must be a trained torch.nn.Module (theta-hat), or None to train one "
                              "on the protected data (victim= names the architecture).")
    t0 = time.perf_counter()
    kw = dict(image_column=image_column, label_column=label_column, resolution=working_size(resolution))
    T = load_labelled(test, desc="Reading test", defines_classes=False, **kw)
    victim_info: dict = {"given": type(model).__name__} if model is not None else {}
    n_train = None
    if model is None:
        P = load_labelled(protected, desc="Reading protected", **kw)
        check_same_task(P, T)
        model, cfg = _train_theta_hat(P, victim, epochs, seed, progress)
        victim_info, n_train = cfg.to_dict(), len(P)
    model.eval()
    tx, ty = _tensors(T)
    with torch.no_grad():
        outputs = model(tx[:1].float().to(next(model.parameters()).device) / 255).shape[-1]
    if int(ty.max()) >= outputs:
        raise ProtectionError(f"the model has {outputs} outputs but the test data has label {int(ty.max())}; "
                              "certify a model of the test data's classes.")
    base = accuracy(model, tx, ty)
    accs = smoothed_accuracies(model, tx, ty, sigma=sigma, n=n, seed=seed, progress=progress)
    entries = certified_learnability(accs, q=q, sigma=sigma, etas=etas, confidence=confidence)
    return Certificate(q=q, sigma=sigma, n=n, confidence=confidence, base_accuracy=base, entries=entries,
                       accuracies=[float(a) for a in np.sort(accs)], victim=victim_info, seed=seed,
                       sizes={"train": n_train, "test": len(T)}, seconds=round(time.perf_counter() - t0, 1))


def project_to_sphere(params: Sequence[torch.Tensor], anchor: Sequence[torch.Tensor], eta: float) -> float:
    """theta <- anchor + eta * (theta - anchor) / ||theta - anchor||_2 over all tensors together (in place).

    Onto the sphere, not the ball (methods.md §3.4, §6.9): updates inside the ball are scaled up too. Returns the
    norm before projection.
    """
    with torch.no_grad():
        diffs = [p - a for p, a in zip(params, anchor)]
        norm = float(torch.sqrt(sum((d.double() ** 2).sum() for d in diffs)))
        if norm > 0:
            scale = eta / norm
            for p, a, d in zip(params, anchor, diffs):
                p.copy_(a + d * scale)
    return norm


def recover(model: nn.Module, clean: Any, test: Any, *, etas: Sequence[float] = DEFAULT_RECOVERY_ETAS,
            epochs: int = 10, lr: float = 0.01, batch_size: int = 128, seed: int = 0,
            image_column: str | None = None, label_column: str | None = None, progress: bool = True,
            resolution: int | tuple[int, int] | None = None) -> dict:
    """Weight-recovery attack: fine-tune a copy of `model` (theta-hat) on `clean` for each eta, projected onto the
    eta-sphere around theta-hat after every step; returns {"base_accuracy", "curve": [{eta, test_accuracy}]}.
    Images of any size are resized to `resolution` (default 32)."""
    etas = _etas(etas, positive=True)
    for name, value, least in (("epochs", epochs, 1), ("batch_size", batch_size, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise ProtectionError(f"{name}={value!r} must be an integer >= {least}.")
    if not isinstance(model, nn.Module):
        raise ProtectionError(f"model={model!r} must be the trained torch.nn.Module to recover from (theta-hat).")
    if not _number("lr", lr) > 0:
        raise ProtectionError(f"lr={lr!r} must be positive.")
    kw = dict(image_column=image_column, label_column=label_column, resolution=working_size(resolution))
    C = load_labelled(clean, desc="Reading clean", **kw)
    T = load_labelled(test, desc="Reading test", defines_classes=False, **kw)
    check_same_task(C, T)
    cx, cy = _tensors(C)
    tx, ty = _tensors(T)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, label_smoothing=0.0, augment=True)
    curve = []
    for eta in etas:
        if eta <= 0:
            raise ProtectionError(f"eta={eta} must be positive for recovery.")
        m = copy.deepcopy(model)
        params = [p for _, p in m.named_parameters()]
        anchor = [p.detach().clone() for p in params]
        fit(m, cx, cy, cfg, seed=seed, progress=progress, desc=f"recover eta={eta:g}", schedule="cosine",
            after_step=lambda params=params, anchor=anchor, eta=eta: project_to_sphere(params, anchor, eta))
        curve.append({"eta": float(eta), "test_accuracy": accuracy(m, tx, ty)})
    return {"base_accuracy": accuracy(model, tx, ty), "curve": curve, "epochs": epochs, "lr": lr,
            "clean_rows": len(C), "test_rows": len(T), "seed": seed}
