"""The one projected signed-gradient loop the methods share (EM's error-minimising noise, PUE's robust steps,
bayes' ascent): minimise or maximise any objective, its gradient from a callback (which may average several draws:
augmentations, weight noise), each step projected onto the epsilon box and the [0, 1] image range."""

from __future__ import annotations

from typing import Callable

import torch

PGD_PIXELS = 2 ** 21       # image pixels per per-batch PGD chunk (at most batch_size rows; 41 of 224x224)


def signed_pgd(x: torch.Tensor, delta: torch.Tensor, gradient: Callable[[torch.Tensor, int], torch.Tensor], *,
               epsilon: float, step_size: float, steps: int, maximise: bool) -> torch.Tensor:
    """`steps` signed steps on x_adv = clip(x + delta): x_adv moves by step_size * sign(gradient(x_adv, k)) up
    (maximise) or down, then is projected; returns the effective delta x_adv - x, so what was optimised is exactly
    what is released. `gradient(x_adv, k)` is the objective's gradient at step k w.r.t. x_adv (detached input)."""
    x_adv = (x + delta.clamp(-epsilon, epsilon)).clamp(0, 1)
    for k in range(steps):
        grad = gradient(x_adv, k)
        x_adv = x_adv.detach() + step_size * grad.sign() if maximise else x_adv.detach() - step_size * grad.sign()
        x_adv = (x + (x_adv - x).clamp(-epsilon, epsilon)).clamp(0, 1)
    return (x_adv - x).detach()
