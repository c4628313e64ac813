"""Targeted adversarial poisoning (TAP): Fowl, Goldblum, Chiang, Geiping, Czaja, Goldstein, "Adversarial Examples
Make Strong Poisons", NeurIPS 2021 (arXiv 2106.10807). Spec: methods.md §4.1, §4.8.

Each image is pushed, within the budget, toward another class (the next one, or the surrogate's runner-up), so a
model trained on the protected data learns features that do not fit the real labels.

Per batch, against a *fixed* surrogate that was trained on clean data (the bundled CIFAR-10 ConvNet unless
`surrogate=`): targeted PGD that *minimises* CE(f(x + delta), t) with t = (y + 1) mod K ("next", the paper's label
map) or the surrogate's most likely class other than y ("nearest"). No bi-level optimisation: the surrogate is
never updated. The one PGD loop is `_pgd.signed_pgd`, in fp32, in chunks bounded by pixels (as em's per-batch
form), from a random start drawn per row id, so the bytes depend on the seed and the row, never on the batching.

Differences from the paper: 50 PGD steps by default instead of 250 (CPU cost; TAPConfig says what is lost), no
restarts and no differentiable augmentation during the attack, and the surrogate is the small bundled ConvNet
rather than a ResNet-18 (pass `surrogate=` for another).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ProtectionError
from ._pgd import signed_pgd
from ._registry import register
from .base import LabelledSurrogateMethod, MethodConfig

TARGETS = ("next", "nearest")


@dataclass
class TAPConfig(MethodConfig):
    """TAP options (L-inf). The paper's CIFAR-10 values are epsilon 8/255 and 250 PGD steps (methods.md §4.8)."""

    # 50 steps, not the paper's 250: a fifth of the CPU time (each step is one forward + backward pass of the
    # surrogate per image), and nothing measurable lost on the bundled surrogate: on 200 CIFAR-10 training images
    # (8/255, released uint8) the target class was the surrogate's prediction on 99.5 % of them after 20, 50, 100
    # and 250 steps alike, and the targeted loss was 0.074 after 50 steps (step 2.5 eps/steps) against 0.089 after
    # 250 (the REM script's 0.064/255 step), from 4.84 on the clean images. steps=250 for the paper's run.
    steps: int = 50
    # None: 2.5 * epsilon / steps, capped at epsilon (Madry et al.'s rule, as training.linf_adversarial): 0.4/255
    # at 8/255 and 50 steps. With the random start that is enough travel to cross the whole box.
    step_size: float | None = None
    random_start: bool = True           # start delta at U(-eps, eps), drawn per (seed, row id)
    batch_size: int = 512               # at most this many rows per PGD chunk (fewer for large working sizes)
    target: str = "next"                # "next": y -> (y + 1) mod K (the paper); "nearest": the surrogate's most
                                        # likely class on the clean image other than y (the cheapest target)
    surrogate: Any = None               # fixed surrogate: None = the bundled CIFAR-10 default, a path, repo id or model

    def validate(self) -> None:
        super().validate()
        for name in ("steps", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ProtectionError(f"{name}={v!r} must be a positive integer.")
        if self.target not in TARGETS:
            raise ProtectionError(f"target={self.target!r} is not one of {TARGETS}.")
        if self.step_size is None:
            self.step_size = min(self.epsilon, 2.5 * self.epsilon / self.steps)
        if not 0 < self.step_size <= self.epsilon:
            raise ProtectionError(f"step_size={self.step_size!r} must be in (0, epsilon] (epsilon={self.epsilon!r}); "
                                  "leave it out for 2.5 * epsilon / steps.")


def target_classes(logits: torch.Tensor, y: torch.Tensor, how: str) -> torch.Tensor:
    """The class each row is pushed toward: (y + 1) mod K ("next") or the highest logit other than y's
    ("nearest")."""
    k = logits.shape[1]
    if how == "next":
        return (y + 1) % k
    masked = logits.detach().float().clone()
    masked[torch.arange(len(y), device=y.device), y] = float("-inf")
    return masked.argmax(1)


def pgd_targeted(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, delta: torch.Tensor, *,
                 epsilon: float, step_size: float, steps: int) -> torch.Tensor:
    """Targeted signed PGD, fp32: minimises CE(f(x + delta), target) (model in eval mode, weights untouched).
    The loss is summed over rows, so each row's gradient is its own, whatever else shares the chunk."""
    was_training = model.training
    model.eval()

    def gradient(x_adv: torch.Tensor, _step: int) -> torch.Tensor:
        x_adv = x_adv.detach().requires_grad_(True)
        loss = F.cross_entropy(model(x_adv).float(), target, reduction="sum")
        return torch.autograd.grad(loss, x_adv)[0]

    out = signed_pgd(x, delta, gradient, epsilon=epsilon, step_size=step_size, steps=steps, maximise=False)
    model.train(was_training)
    return out


def checked_labels(method: LabelledSurrogateMethod, images: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    """The batch's labels, each a class of the surrogate (the transform checks this before; direct callers get the
    same refusal), or the surrogate's predicted classes when there are none."""
    from .._data import check_labels

    if labels is None:
        return np.asarray(method.pseudo_labels(images), dtype=np.int64)
    return check_labels(list(labels), "label", method.num_classes)


@register
class TargetedAdversarialPoisoning(LabelledSurrogateMethod):
    """Targeted error-maximising noise: delta minimises CE(f(x + delta), target) against a fixed, clean-trained
    surrogate."""

    name = "tap"
    config_class = TAPConfig

    def perturb(self, images: np.ndarray, labels: np.ndarray | None, ids: list[str]) -> np.ndarray:
        cfg = self.config

        def chunk(model, x, y, delta, rows):
            if cfg.target == "next":
                target = (y + 1) % self.num_classes
            else:
                with torch.no_grad():
                    target = target_classes(model(x), y, "nearest")
            return pgd_targeted(model, x, target, delta, epsilon=cfg.epsilon, step_size=cfg.step_size,
                                steps=cfg.steps)

        return self._pgd_per_batch(images, checked_labels(self, images, labels), ids, cfg.random_start, chunk)
