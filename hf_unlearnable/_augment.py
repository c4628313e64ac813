"""Training-time batch defences (methods.md §4.2, APBench's implementations): CutOut, CutMix, MixUp and UEraser.

They act on the float [0, 1] NCHW batches of training.fit, on the training device, after crop + flip: a victim
that trains through them may no longer learn the shortcut a protection plants. Each is two hooks, so fit keeps
its one loop: `augment(x, y) -> (x, target)` where fit's `transform` runs, and `loss(model, x, target,
label_smoothing) -> (loss, logits)` where fit computes its loss (under its autocast). The logits are one per
training image, for the train accuracy against the original labels. Randomness is torch's global RNG (kornia's
too), which fit seeds. kornia is imported on first use: importing the library stays fast.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

UERASER_COPIES = 5  # K: augmented copies per batch; the per-sample max loss over them is trained on


class _Plain:
    """Inputs as they are, plain cross-entropy: the base of the defences below."""

    def augment(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, y

    def loss(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
             label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        out = model(x)
        return F.cross_entropy(out.float(), target, label_smoothing=label_smoothing), out


def cutout(x: torch.Tensor) -> torch.Tensor:
    """Zero one square per image, centred on a uniform random pixel and clipped at the borders (DeVries & Taylor
    2017; APBench's Cutout(16) on 32 px: the side is half the shorter image side)."""
    n, _, h, w = x.shape
    side = max(1, min(h, w) // 2)
    top = torch.randint(0, h, (n, 1), device=x.device) - side // 2
    left = torch.randint(0, w, (n, 1), device=x.device) - side // 2
    rows = torch.arange(h, device=x.device).view(1, h)
    cols = torch.arange(w, device=x.device).view(1, w)
    in_rows = (rows >= top) & (rows < top + side)                         # n, h
    in_cols = (cols >= left) & (cols < left + side)                       # n, w
    keep = ~(in_rows[:, :, None] & in_cols[:, None, :])                   # n, h, w
    return x * keep[:, None].to(x.dtype)


class Cutout(_Plain):
    def augment(self, x, y):
        return cutout(x), y


def mixed_cross_entropy(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """The mixed-label loss: rows of `target` are (y_a, y_b, w) with w the share of the image that comes from the
    partner y_b; loss = mean((1 - w) CE(logits, y_a) + w CE(logits, y_b))."""
    y_a, y_b, w = target[:, 0].long(), target[:, 1].long(), target[:, 2].float()
    loss_a = F.cross_entropy(logits, y_a, reduction="none", label_smoothing=label_smoothing)
    loss_b = F.cross_entropy(logits, y_b, reduction="none", label_smoothing=label_smoothing)
    return ((1 - w) * loss_a + w * loss_b).mean()


@functools.lru_cache(maxsize=None)
def _mix_op(kind: str):
    """(kornia op, whether its lambda is the share of y_a). kornia's MixUpV2 lambda is the partner's share; CutMixV2's
    is too by default, but 1 - that with use_correct_lambda=True (kornia >= 0.8, which warns without it)."""
    import kornia.augmentation as K

    if kind == "mixup":
        return K.RandomMixUpV2(data_keys=["input", "class"]), False
    try:
        return K.RandomCutMixV2(data_keys=["input", "class"], use_correct_lambda=True), True
    except TypeError:       # an older kornia: lambda is the pasted (partner's) area share
        return K.RandomCutMixV2(data_keys=["input", "class"]), False


class Mix(_Plain):
    """CutMix or MixUp inside the batch (kornia, default strengths as APBench) with the mixed-label loss."""

    def __init__(self, kind: str):
        self.kind = kind

    def augment(self, x, y):
        op, lam_is_own_share = _mix_op(self.kind)
        x, labels = op(x, y)
        labels = labels.reshape(-1, len(y), 3)[0].float()                   # CutMixV2: (num_mix = 1, n, 3)
        if lam_is_own_share:
            labels = torch.stack([labels[:, 0], labels[:, 1], 1 - labels[:, 2]], 1)
        return x, labels

    def loss(self, model, x, target, label_smoothing=0.0):
        out = model(x)
        return mixed_cross_entropy(out.float(), target, label_smoothing), out


@functools.lru_cache(maxsize=None)
def _ueraser_op(dev: str):
    """UEraser's augmentation (lafeat/ueraser, APBench defense/ueraser.py), built once per device."""
    import kornia.augmentation as K

    return K.AugmentationSequential(
        K.RandomPlasmaBrightness(roughness=(0.3, 0.7), intensity=(0.5, 1.0), same_on_batch=False, p=0.5,
                                 keepdim=True),
        K.RandomPlasmaContrast(roughness=(0.3, 0.7), p=0.5),
        K.RandomChannelShuffle(same_on_batch=False, p=0.5, keepdim=True),
        K.auto.TrivialAugment(),
    ).to(torch.device(dev))


def ueraser(x: torch.Tensor) -> torch.Tensor:
    """One UEraser augmentation of a float [0, 1] batch (clamped to [0, 1])."""
    return _ueraser_op(str(x.device))(x).clamp_(0, 1)


class UEraser(_Plain):
    """Adversarial augmentation (Qin et al. 2023, arXiv 2303.15127): `copies` UEraser views of each batch, each
    through its own forward pass (so batch-norm sees one view at a time, as in APBench), and the per-sample MAX loss
    over the views is trained on. copies = 1 is UEraser-Lite (plain augmentation)."""

    def __init__(self, copies: int):
        self.copies = copies

    def augment(self, x, y):
        return torch.cat([ueraser(x) for _ in range(self.copies)]), y      # copy-major: rows k*n .. (k+1)*n - 1

    def loss(self, model, x, target, label_smoothing=0.0):
        losses = []
        for view in x.split(len(target)):
            out = model(view)
            losses.append(F.cross_entropy(out.float(), target, reduction="none", label_smoothing=label_smoothing))
        return torch.stack(losses).max(0).values.mean(), out                  # the last view's logits, as APBench


BATCH_DEFENCES = {"cutout": Cutout(), "cutmix": Mix("cutmix"), "mixup": Mix("mixup"),
                  "ueraser": UEraser(UERASER_COPIES), "ueraser-lite": UEraser(1)}


def batch_defence(name: str):
    """The hooks of a batch defence; None for "none" (fit then trains exactly as without this module)."""
    if isinstance(name, str) and name == "none":
        return None
    if not isinstance(name, str) or name not in BATCH_DEFENCES:
        raise ValueError(f"batch_defence={name!r} is not one of {['none', *BATCH_DEFENCES]}.")
    return BATCH_DEFENCES[name]
