"""Robust error-minimising noise (REM): Fu, He, Liu, Shen, Tao, "Robust Unlearnable Examples: Protecting Data
Privacy Against Adversarial Learning", ICLR 2022 (OpenReview baUQQPwQiAg). Spec: methods.md §4.1, §4.7.

Noise that keeps each image's loss low even after random crops and flips and after an adversary's own smaller
perturbation, so that the shortcut is meant to survive adversarial training with a smaller radius. Each row's
delta_u solves

    min_{|delta_u| <= eps}  E_T [ max_{|delta_a| <= rho_a}  CE(f(T(x + delta_u) + delta_a), y) ]

with T a random reflect-padded crop + horizontal flip: one `_pgd.signed_pgd` loop (minimising) over `steps`, whose
gradient at each step is the mean over `eot` draws of T of the gradient w.r.t. delta_u *through T* with delta_a
held constant (the paper's first-order trick), delta_a being the inner maximum found on the augmented image by
`signed_pgd(maximise=True)` (`adversarial_steps` steps from a random start in the rho_a box).

Two forms, as em's:
- `craft(ds, "rem")`: the paper's algorithm on em's min-min loop (methods/em.py): a fresh surrogate is
  *adversarially* trained on the perturbed rows (each step: a crop + flip, then the rho_a inner maximum, then an
  SGD step on that), `train_steps` steps per round, in alternation with the noise step above over every row, until
  the surrogate fits the perturbed rows (error < stop_error, after min_iters rounds). The last round's noise is
  made against the final surrogate, as the paper's regeneration. bf16 where fast, as em's craft. Where it differs
  from the paper's code (methods.md §4.7): each round's noise step starts from the previous round's delta_u (em's
  warm start; the paper restarts every refresh, and its regeneration, from a random start); the rows are refreshed
  once a round, all of them, rather than each minibatch just before its training step; no lr schedule (the
  paper's lr falls 10x every 2,000 steps); em's stop rule, not a fixed 5,000 steps; em's surrogate and batch
  (ConvNet, 512) rather than ResNet-18 and 128. `surrogate=` is the per-batch form's and is refused here.
- `protect(method="rem")`: per batch against a *fixed* surrogate (the bundled CIFAR-10 ConvNet, trained without
  adversarial training, unless `surrogate=`), fp32, in chunks bounded by pixels. Much weaker: on the 10k matrix
  protocol it left victims at 55 % (clean 72 %), where the min-min needs a surrogate that learns the noise.

Determinism: the starting delta_u (`random_start`) is drawn from `row_rng(seed, row id)` and every random choice of
the EOT (each draw's crop offset, flip, and delta_a's start) from that generator jumped far ahead (`PCG64.jumped()`,
an independent stream; the craft's round k jumps 2 + k times), one stream per row, consumed in the same order
whatever the chunk. Losses are summed over rows, so each row's gradient is its own. The per-batch bytes depend on
the seed and the row id, never on how rows are grouped into batches (`batch_coupled` stays False). The craft's
surrogate steps draw their crops and adversary starts from one generator per round (seed, round), so a resumed
craft draws what an uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ProtectionError
from ._pgd import signed_pgd
from ._registry import register
from .base import MethodConfig
from .em import EMConfig, ErrorMinimizing
from .tap import checked_labels


@dataclass
class REMConfig(EMConfig):
    """REM options (L-inf). Paper's CIFAR-10 values (methods.md §4.7): rho_u = epsilon = 8/255, 10 noise steps of
    1.6/255, rho_a = 4/255, 10 inner steps of 0.8/255, 5 EOT draws; all of those are the defaults (at epsilon 8/255)
    except `adversarial_steps`. The craft's loop options (train_steps, min_iters, max_iters, stop_error, lr,
    surrogate_arch, surrogate_width, noise_batch_size) are em's; `mode` is sample-wise only."""

    steps: int | None = 10              # signed steps on delta_u (the paper's 10)
    # None: 2 * epsilon / steps, capped at epsilon: the paper's 1.6/255 at 8/255 and 10 steps
    step_size: float | None = None
    # craft: adversarial SGD steps per round; 20 x 512 rows is one pass over 10k rows between two noise passes,
    # the paper's one surrogate step per noise refresh of the same rows
    train_steps: int = 20
    # rho_a, the inner adversary's L-inf radius, below epsilon. None: epsilon / 2, the paper's 4/255 at 8/255 (a
    # fixed 4/255 would refuse protect(method="rem", epsilon=4/255) unless rho_a were given too)
    adversarial_epsilon: float | None = None
    # 5, not the paper's 10: the noise costs steps * eot * (adversarial_steps + 1) forward + backward passes per
    # image (550 with the paper's settings, against em's 20), so this nearly halves it (300). On the bundled
    # surrogate (not adversarially trained) 5 inner steps get most of the way: on 200 augmented CIFAR-10 images the
    # inner maximum's loss was 4.11 after 5 steps, 4.44 after 10, 4.60 after 20 (accuracy 5.5 %, 5 %, 5 %); and
    # noise crafted on 48 images with 1, 3, 5 or 10 inner steps left a robust loss (20-step adversary) of 1.10,
    # 1.02, 0.98 and 1.00, from 4.66 clean, 5 taking about half the time of 10. adversarial_steps=10: the paper's.
    adversarial_steps: int = 5
    # None: 2 * adversarial_epsilon / adversarial_steps, capped at adversarial_epsilon: the paper's 0.8/255 at 4/255
    # and 10 steps; 1.6/255 at 5
    adversarial_step_size: float | None = None
    eot: int = 5                        # samp_num: draws of T (crop + flip) averaged in each noise step
    random_start: bool | None = True    # delta_u starts at U(-eps, eps) per (seed, row id); delta_a always starts
                                        # at U(-rho_a, rho_a), as the paper's inner PGD
    # batch_size: per batch, at most this many rows per chunk (fewer for large working sizes); craft, the
    # surrogate's batch and the noise batch. surrogate: the per-batch form's fixed surrogate (the craft trains its own)

    def validate(self) -> None:
        if self.mode != "samplewise":
            raise ProtectionError(f"mode={self.mode!r}: rem's noise is sample-wise (one delta per row); drop mode=.")
        if self.subset is not None or self.class_step != "sign":
            raise ProtectionError("subset= and class_step= are em's class-wise options; rem's noise is sample-wise "
                                  "over every row: drop them.")
        # the step sizes' defaults derive from epsilon and the step counts, so those (and every type) come first;
        # EMConfig.validate then checks the rest (running MethodConfig's checks again, which changes nothing)
        MethodConfig.validate(self)
        for name in ("steps", "adversarial_steps", "eot", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ProtectionError(f"{name}={v!r} must be a positive integer.")
        if self.step_size is None:
            self.step_size = min(self.epsilon, 2 * self.epsilon / self.steps)
        if self.adversarial_epsilon is None:
            self.adversarial_epsilon = self.epsilon / 2
        if not 0 < self.adversarial_epsilon < self.epsilon:
            raise ProtectionError(
                f"adversarial_epsilon={self.adversarial_epsilon!r} must be above 0 and below epsilon={self.epsilon!r}: "
                "the noise only survives an adversary with a smaller radius (the paper: 4/255 against 8/255).")
        if self.adversarial_step_size is None:
            self.adversarial_step_size = min(self.adversarial_epsilon,
                                             2 * self.adversarial_epsilon / self.adversarial_steps)
        if not 0 < self.step_size <= self.epsilon:
            raise ProtectionError(f"step_size={self.step_size!r} must be in (0, epsilon] (epsilon={self.epsilon!r}); "
                                  "leave it out for 2 * epsilon / steps.")
        if not 0 < self.adversarial_step_size <= self.adversarial_epsilon:
            raise ProtectionError(
                f"adversarial_step_size={self.adversarial_step_size!r} must be in (0, adversarial_epsilon] "
                f"(adversarial_epsilon={self.adversarial_epsilon!r}); leave it out for "
                "2 * adversarial_epsilon / adversarial_steps.")
        super().validate()


def crop_pad(h: int, w: int) -> int:
    """The crop's reflect padding: 4 pixels at 32x32 (the paper's crop(32, 4)), scaling with the working size."""
    return max(0, min(max(1, round(min(h, w) / 8)), min(h, w) - 1))


def crop_flip_rows(x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, flip: torch.Tensor, pad: int) -> torch.Tensor:
    """`training.crop_flip` with each row's offsets (dx, dy in [0, 2 pad]) and flip given rather than drawn from one
    generator for the batch: differentiable (a gather from the reflect-padded batch)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect") if pad else x
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).to(x.device)
    cols = dx.view(n, 1) + torch.arange(w).view(1, w)
    cols = torch.where(flip.view(n, 1), cols.flip(1), cols).to(x.device)
    idx_n = torch.arange(n, device=x.device).view(n, 1, 1)
    out = padded.permute(0, 2, 3, 1)[idx_n, rows.view(n, h, 1), cols.view(n, 1, w)]
    return out.permute(0, 3, 1, 2).contiguous()


class RowDraws:
    """The EOT's random choices, one independent stream per row: `next()` gives every row's next crop offsets, flip
    and delta_a start. A row's draws depend only on (seed, row id) and how many draws came before, never on the
    other rows of the chunk."""

    def __init__(self, seed: int, ids: Sequence[str], shape: tuple[int, int, int], adversarial_epsilon: float,
                 stream: int = 1):
        from .._images import row_rng

        # jumped `stream` times (~2^127 draws each): independent of the row's delta_u start, drawn from
        # row_rng(seed, id) itself, and of every other stream (the per-batch form's 1, the craft's rounds 2, 3, ...)
        self._rngs = [np.random.Generator(row_rng(seed, rid).bit_generator.jumped(stream)) for rid in ids]
        self.shape = tuple(shape)
        self.rho = adversarial_epsilon
        self.pad = crop_pad(shape[1], shape[2])

    def next(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(dx, dy, flip, start): int64 [n], int64 [n], bool [n] and float32 [n, C, H, W] in [-rho_a, rho_a]."""
        offsets, flips, starts = [], [], []
        for rng in self._rngs:
            offsets.append(rng.integers(0, 2 * self.pad + 1, size=2))
            flips.append(rng.random() < 0.5)
            starts.append(rng.uniform(-self.rho, self.rho, size=self.shape).astype(np.float32))
        offsets = torch.from_numpy(np.stack(offsets).astype(np.int64))
        return (offsets[:, 0], offsets[:, 1], torch.tensor(flips, dtype=torch.bool),
                torch.from_numpy(np.stack(starts)))


def _ce_gradient(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, bf16: bool = False) -> torch.Tensor:
    """Gradient of the summed cross-entropy w.r.t. the input (summed: each row's gradient is its own)."""
    from ..training import autocast

    x = x.detach().requires_grad_(True)
    with autocast(x.device, bf16):
        logits = model(x)
    return torch.autograd.grad(F.cross_entropy(logits.float(), y, reduction="sum"), x)[0]


def inner_max(model: torch.nn.Module, x_t: torch.Tensor, y: torch.Tensor, start: torch.Tensor, *,
              adversarial_epsilon: float, adversarial_step_size: float, adversarial_steps: int,
              bf16: bool = False) -> torch.Tensor:
    """The adversary's offset delta_a (effective, so x_t + delta_a is in [0, 1]) maximising CE(f(x_t + delta_a), y)
    in the rho_a box: signed PGD from `start`."""
    return signed_pgd(x_t.detach(), start.to(x_t.device), lambda xa, _k: _ce_gradient(model, xa, y, bf16),
                      epsilon=adversarial_epsilon, step_size=adversarial_step_size, steps=adversarial_steps,
                      maximise=True)


def robust_gradient(model: torch.nn.Module, x_adv: torch.Tensor, y: torch.Tensor, draws: RowDraws, eot: int, *,
                    adversarial_epsilon: float, adversarial_step_size: float,
                    adversarial_steps: int, bf16: bool = False) -> tuple[torch.Tensor, float]:
    """Gradient w.r.t. x_adv = x + delta_u of E_T[max_{delta_a} CE(f(T(x_adv) + delta_a), y)] over `eot` draws:
    delta_a from `inner_max` on T(x_adv), then held constant while the loss is differentiated through T. Returns the
    summed gradient (its sign is the mean's) and the mean robust loss per row."""
    from ..training import autocast

    grad = torch.zeros_like(x_adv)
    total = torch.zeros((), device=x_adv.device)   # summed on the device: one sync per call, not one per draw
    for _ in range(eot):
        dx, dy, flip, start = draws.next()
        with torch.no_grad():
            x_t = crop_flip_rows(x_adv, dx, dy, flip, draws.pad)
        delta_a = inner_max(model, x_t, y, start, adversarial_epsilon=adversarial_epsilon,
                            adversarial_step_size=adversarial_step_size, adversarial_steps=adversarial_steps,
                            bf16=bf16)
        x_in = x_adv.detach().requires_grad_(True)
        # x_t + delta_a is already in [0, 1] (delta_a is the effective offset): no clamp, so no gradient is cut
        with autocast(x_in.device, bf16):
            logits = model(crop_flip_rows(x_in, dx, dy, flip, draws.pad) + delta_a)
        loss = F.cross_entropy(logits.float(), y, reduction="sum")
        grad += torch.autograd.grad(loss, x_in)[0]
        total += loss.detach()
    return grad, float(total) / (eot * max(1, len(x_adv)))


def pgd_robust_min(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, delta: torch.Tensor, draws: RowDraws,
                   *, epsilon: float, step_size: float, steps: int, eot: int, adversarial_epsilon: float,
                   adversarial_step_size: float, adversarial_steps: int, bf16: bool = False) -> torch.Tensor:
    """REM's noise step: signed PGD minimising the EOT robust loss (model in eval mode, weights untouched); returns
    the effective delta_u."""
    was_training = model.training
    model.eval()

    def gradient(x_adv: torch.Tensor, _step: int) -> torch.Tensor:
        return robust_gradient(model, x_adv, y, draws, eot, adversarial_epsilon=adversarial_epsilon,
                               adversarial_step_size=adversarial_step_size, adversarial_steps=adversarial_steps,
                               bf16=bf16)[0]

    out = signed_pgd(x, delta, gradient, epsilon=epsilon, step_size=step_size, steps=steps, maximise=False)
    model.train(was_training)
    return out


@register
class RobustErrorMinimising(ErrorMinimizing):
    """Robust error-minimising noise: delta_u minimises the loss under EOT of crop + flip and an inner L-inf
    adversary of radius rho_a < epsilon; crafted against an adversarially co-trained surrogate (em's min-min loop),
    or per batch against a fixed one."""

    name = "rem"
    config_class = REMConfig
    splits_note = ""

    def perturb(self, images: np.ndarray, labels: np.ndarray | None, ids: list[str]) -> np.ndarray:
        cfg = self.config

        def chunk(model, x, y, delta, rows):
            draws = RowDraws(cfg.seed, ids[rows], tuple(x.shape[1:]), cfg.adversarial_epsilon)
            return pgd_robust_min(model, x, y, delta, draws, epsilon=cfg.epsilon, step_size=cfg.step_size,
                                  steps=cfg.steps, eot=cfg.eot, adversarial_epsilon=cfg.adversarial_epsilon,
                                  adversarial_step_size=cfg.adversarial_step_size,
                                  adversarial_steps=cfg.adversarial_steps)

        return self._pgd_per_batch(images, checked_labels(self, images, labels), ids, cfg.random_start is not False,
                                   chunk)

    # -- the craft: em's loop, with an adversarially trained surrogate and the robust noise step ----------------
    @classmethod
    def check_craft(cls, config: REMConfig) -> None:
        if config.surrogate is not None:
            raise ProtectionError(
                "surrogate= is the fixed surrogate of rem's per-batch form, protect(method=\"rem\", surrogate=...); "
                "craft(ds, \"rem\") trains its own adversarially (surrogate_arch=, surrogate_width=): drop surrogate=.")

    def _round_generator(self, model, history: list[dict]) -> torch.Generator:
        """The surrogate steps' crops, flips and adversary starts: one stream per (craft, round), seeded by the round,
        so a craft resumed at a round draws what an uninterrupted one would (keyed by the craft's model too: a
        second craft by the same object starts its round afresh)."""
        key = (model, len(history))
        if getattr(self, "_gen_key", None) != key:
            seed = int(np.random.default_rng([self.config.seed, 4, len(history)]).integers(2**62))
            self._gen = torch.Generator().manual_seed(seed)
            self._gen_key = key
        return self._gen

    def _surrogate_step(self, trainer, x: torch.Tensor, y: torch.Tensor, history: list[dict]) -> float:
        """Adversarial training on the perturbed batch: a random crop + flip, the rho_a inner maximum against the
        current surrogate (eval mode, so the attack leaves the BatchNorm statistics alone), one SGD step on that."""
        cfg = self.config
        gen = self._round_generator(trainer.model, history)
        n, _, h, w = x.shape
        pad = crop_pad(h, w)
        offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=gen)
        flip = torch.rand(n, generator=gen) < 0.5
        start = (torch.rand(x.shape, generator=gen) * 2 - 1) * cfg.adversarial_epsilon
        model = trainer.model
        model.eval()
        with torch.no_grad():
            x_t = crop_flip_rows(x, offsets[0], offsets[1], flip, pad)
        delta_a = inner_max(model, x_t, y, start, adversarial_epsilon=cfg.adversarial_epsilon,
                            adversarial_step_size=cfg.adversarial_step_size, adversarial_steps=cfg.adversarial_steps,
                            bf16=trainer.bf16)
        return trainer.step(x_t + delta_a, y)

    def _noise_step(self, model, x: torch.Tensor, y: torch.Tensor, delta: torch.Tensor, history: list[dict],
                    ids=None) -> torch.Tensor:
        """The robust noise step over a batch of rows, its EOT draws from the rows' own stream for this round."""
        cfg = self.config
        draws = RowDraws(cfg.seed, ids, tuple(x.shape[1:]), cfg.adversarial_epsilon, stream=2 + len(history))
        return pgd_robust_min(model, x, y, delta, draws, epsilon=cfg.epsilon, step_size=cfg.step_size,
                              steps=cfg.steps, eot=cfg.eot, adversarial_epsilon=cfg.adversarial_epsilon,
                              adversarial_step_size=cfg.adversarial_step_size,
                              adversarial_steps=cfg.adversarial_steps, bf16=True)
