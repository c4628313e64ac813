"""Provably Unlearnable Examples (PUE): Wang, Xue, Li, Camtepe, Zhu, "Provably Unlearnable Data Examples",
NDSS 2025 (arXiv 2405.03316). Spec: methods.md §3.3.

Class-wise EM (methods/em.py) whose surrogate updates and noise steps are taken under random weight
perturbations at levels sigma_j = j * robust_noise_step, j = 0..J (J = robust_noise / robust_noise_step), once
"switched on" (the surrogate's accuracy on the perturbed subset exceeds `switch_accuracy`, or from round
`turn_on_robust`). The noise then stays error-minimising for every classifier near theta-hat, which lowers the
certified (q, eta)-learnability (hf_unlearnable.certify). This is the `--pue` behaviour of make_pue.sh: the
robust noise step is on (the older README omitted the flag, which silently disabled it).

Deviation for CPU budgets: the paper averages 100 weight draws per level for the surrogate step (avgtimes) and
10 for the noise step (avgtimes_perturb); the defaults here are smaller and are recorded in the noise's config.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ProtectionError
from ._registry import register
from ._pgd import signed_pgd
from .em import EMConfig, ErrorMinimizing


@dataclass
class PUEConfig(EMConfig):
    """PUE options; defaults from make_pue.sh (methods.md §3.3) except the draw counts (see module docstring)."""

    mode: str = "classwise"
    subset: float | None = 0.2          # make_pue.sh's 20 % (EM's None default would fit up to 10k rows)
    class_step: str = "mean"            # the paper's update; the certificate follows its procedure
    train_steps: int = 20
    stop_error: float = 0.1
    robust_noise: float = 0.25          # largest weight-noise level sigma_J
    robust_noise_step: float = 0.05     # Delta: levels 0, 0.05, ..., 0.25
    avgtimes: int = 4                   # weight draws per level, surrogate step (paper: 100)
    avgtimes_perturb: int = 2           # weight draws per level, noise step (paper: 10)
    switch_accuracy: float = 0.5        # robust steps start once subset accuracy exceeds this ...
    turn_on_robust: int | None = None   # ... or from this round on

    def validate(self) -> None:
        super().validate()
        if self.mode != "classwise":
            raise ProtectionError(f"PUE crafts class-wise noise; mode={self.mode!r} is not supported.")
        if self.class_step != "mean":
            raise ProtectionError(f"class_step={self.class_step!r}: PUE takes the paper's mean update only (its "
                                  "noise steps are averaged over weight draws); drop class_step=.")
        if not (self.robust_noise >= 0 and self.robust_noise_step > 0):
            raise ProtectionError("robust_noise must be >= 0 and robust_noise_step > 0.")
        if self.avgtimes < 1 or self.avgtimes_perturb < 1:
            raise ProtectionError("avgtimes and avgtimes_perturb must be at least 1.")

    @property
    def levels(self) -> list[float]:
        n = int(round(self.robust_noise / self.robust_noise_step))
        return [j * self.robust_noise_step for j in range(n + 1)]


class _WeightNoise:
    """Adds sigma * N(0, I) to every parameter (not BN buffers) and restores the exact weights afterwards."""

    def __init__(self, model: nn.Module, gen: torch.Generator):
        self.params = [p for _, p in model.named_parameters()]
        self.gen = gen

    def __call__(self, sigma: float):
        return _Perturbed(self, sigma)


class _Perturbed:
    def __init__(self, noise: _WeightNoise, sigma: float):
        self.noise, self.sigma = noise, sigma

    def __enter__(self):
        self.saved = [p.detach().clone() for p in self.noise.params]
        if self.sigma > 0:
            with torch.no_grad():
                for p in self.noise.params:
                    p.add_(self.sigma * torch.randn(p.shape, generator=self.noise.gen).to(p.device))

    def __exit__(self, *exc):
        with torch.no_grad():
            for p, s in zip(self.noise.params, self.saved):
                p.copy_(s)


@register
class ProvablyUnlearnable(ErrorMinimizing):
    name = "pue"
    splits_across_processes = False   # class-wise: each noise update feeds the next
    config_class = PUEConfig
    per_batch = False

    def perturb(self, images, labels, ids):  # class-wise noise is learned over the whole set
        from .base import Method

        return Method.perturb(self, images, labels, ids)

    def _switched_on(self, history: list[dict]) -> bool:
        cfg = self.config
        if cfg.turn_on_robust is not None and len(history) >= cfg.turn_on_robust:
            return True
        return any(1 - h["error"] > cfg.switch_accuracy for h in history)

    def _weight_noise(self, model: nn.Module, history: list[dict]) -> _WeightNoise:
        # one stream per round, seeded by the round: a run resumed from a checkpoint draws the same weight noise
        key = (model, len(history))
        if getattr(self, "_wn_key", None) != key:
            seed = int(np.random.default_rng([self.config.seed, 1, len(history)]).integers(2**62))
            self._wn = _WeightNoise(model, torch.Generator().manual_seed(seed))
            self._wn_key = key
        return self._wn

    def _surrogate_step(self, trainer, x, y, history):
        if not self._switched_on(history):
            return trainer.step(x, y)
        cfg = self.config
        model = trainer.model
        wn = self._weight_noise(model, history)
        model.train()
        total = 0.0
        for sigma in cfg.levels:   # one SGD step per level, each averaging `avgtimes` weight draws
            trainer.opt.zero_grad(set_to_none=True)
            for _ in range(cfg.avgtimes):
                with wn(sigma):
                    loss = F.cross_entropy(model(x), y) / cfg.avgtimes
                    loss.backward()
                total += float(loss.detach())
            if trainer.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), trainer.grad_clip)
            trainer.opt.step()
        return total / len(cfg.levels)

    def _noise_step(self, model, x, y, delta, history, ids=None):
        if not self._switched_on(history):
            return super()._noise_step(model, x, y, delta, history, ids)
        cfg = self.config
        wn = self._weight_noise(model, history)
        was_training = model.training
        model.eval()
        levels = cfg.levels

        def gradient(x_adv: torch.Tensor, step: int) -> torch.Tensor:
            """One signed step per weight-noise level, the gradient summed over that level's weight draws."""
            grad = torch.zeros_like(x_adv)
            for _ in range(cfg.avgtimes_perturb):
                xa = x_adv.detach().requires_grad_(True)
                with wn(levels[step]):
                    loss = F.cross_entropy(model(xa), y)
                    (g,) = torch.autograd.grad(loss, xa)
                grad += g
            return grad

        out = signed_pgd(x, delta, gradient, epsilon=cfg.epsilon, step_size=cfg.step_size, steps=len(levels),
                         maximise=False)
        model.train(was_training)
        return out
