"""THE one training loop: surrogates (EM co-training, pre-training) and victims (evaluate) all train here.

CPU-fast by default (cpu-training.md): bf16 autocast + channels_last where the hardware has native bf16, SGD nesterov with a one-cycle schedule,
reflect-pad crop + flip done on tensors. Images travel as uint8 NCHW tensors and become float per batch; fit and
predict hold them on the device when they fit (_feed.py) and never wait for it inside the loop.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._augment import batch_defence as _batch_defence
from ._feed import Feed, resident, to_device

# fit / predict keep the uint8 images on a CUDA device when they take under this share of its free memory (on the
# CPU always; 0: never, the per-batch host path)
_RESIDENT_MAX_SHARE = 0.25

logger = logging.getLogger(__name__)


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@functools.lru_cache(maxsize=None)
def fast_bf16(device_type: str) -> bool:
    """Whether bf16 autocast speeds this device up: always on CUDA; on CPU only with native bf16 (AVX-512-bf16
    or AMX). On an AVX2-only CPU bf16 is emulated and about 10x *slower* than fp32 (measured here)."""
    if device_type == "cuda":
        return True
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast(dev: torch.device, enabled: bool = True):
    """bf16 autocast where it is fast (see fast_bf16), else a no-op."""
    return torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=enabled and fast_bf16(dev.type))


def memory_format(dev: torch.device) -> torch.memory_format:
    """channels_last pays off with bf16 kernels; on an AVX2 CPU in fp32 plain NCHW is ~10 % faster (measured)."""
    return torch.channels_last if fast_bf16(dev.type) else torch.contiguous_format


def seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    return torch.Generator().manual_seed(seed)


def nchw(images: np.ndarray) -> torch.Tensor:
    """uint8 NxHxWxC images (as decoded) as the uint8 NxCxHxW tensor the trainers take."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def to_float(x_uint8: torch.Tensor, dev: torch.device) -> torch.Tensor:
    return x_uint8.to(dev, non_blocking=True).float().div_(255.0)


def crop_flip(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random reflect-padded crop + horizontal flip of a float NCHW batch (the standard CIFAR augmentation).

    Applied to the stored (already perturbed) image, so victims see T(x + delta) (methods.md §6.5).
    """
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    dx, dy, flip = to_device(torch.stack([dx, dy, flip.long()]), x.device)     # the host draws, one copy
    rows = dy.view(n, 1) + torch.arange(h, device=x.device).view(1, h)         # n, h
    cols = dx.view(n, 1) + torch.arange(w, device=x.device).view(1, w)         # n, w
    cols = torch.where(flip.view(n, 1).bool(), cols.flip(1), cols)
    idx_n = torch.arange(n, device=x.device).view(n, 1, 1)
    out = padded.permute(0, 2, 3, 1)[idx_n, rows.view(n, h, 1), cols.view(n, 1, w)]
    return out.permute(0, 3, 1, 2).contiguous()


@dataclass
class TrainConfig:
    """How a network is trained. Defaults: the CPU victim protocol of cpu-training.md."""

    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    warmup: float = 0.2           # fraction of steps spent warming up (one-cycle)
    augment: bool = True          # crop + flip
    grad_clip: float | None = 5.0
    bf16: bool = True             # used only where fast (fast_bf16)
    channels_last: bool = True    # used only with bf16 (memory_format)
    adversarial_epsilon: float = 0.0  # > 0: train on L_inf adversarial examples of this radius (Madry et al.)
    adversarial_steps: int = 1    # 1 = FGSM from a random start (Wong et al. 2020, step 1.25 eps); n > 1 = PGD-n
    batch_defence: str = "none"   # a training-time batch defence of _augment.BATCH_DEFENCES (cutmix, ueraser, ...)

    def __post_init__(self):
        if not 0 <= self.adversarial_epsilon <= 1:
            raise ValueError(f"adversarial_epsilon={self.adversarial_epsilon!r} must be in [0, 1].")
        if not isinstance(self.adversarial_steps, int) or self.adversarial_steps < 1:
            raise ValueError(f"adversarial_steps={self.adversarial_steps!r} must be a positive integer.")
        if _batch_defence(self.batch_defence) is not None and self.adversarial_epsilon:
            raise ValueError(f"batch_defence={self.batch_defence!r} cannot be combined with adversarial_epsilon > 0: "
                             "each is a defence of its own.")

    def to_dict(self) -> dict:
        return asdict(self)


def linf_adversarial(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float, steps: int,
                     gen: torch.Generator, bf16: bool = True) -> torch.Tensor:
    """Untargeted L_inf adversarial examples of a float [0, 1] batch, from a uniform random start: FGSM with step
    1.25 eps for one step (fast adversarial training), PGD with step 2.5 eps / steps otherwise. Only the input gets
    a gradient; the weights' .grad are left untouched."""
    step = 1.25 * epsilon if steps == 1 else 2.5 * epsilon / steps
    delta = to_device(torch.rand(x.shape, generator=gen) * 2 - 1, x.device) * epsilon
    for _ in range(steps):
        x_adv = (x + delta).clamp(0, 1).requires_grad_(True)
        with autocast(x.device, bf16):
            loss = F.cross_entropy(model(x_adv).float(), y)
        (g,) = torch.autograd.grad(loss, x_adv)
        delta = (delta + step * g.sign()).clamp(-epsilon, epsilon)
    return (x + delta).clamp(0, 1).detach()


def prepare(model: nn.Module, cfg: TrainConfig, dev: torch.device) -> nn.Module:
    model.to(dev)
    if cfg.channels_last:
        model.to(memory_format=memory_format(dev))
    return model


def fit(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig, *, seed: int = 0,
        desc: str = "Training", progress: bool = True,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        after_step: Callable[[], None] | None = None, schedule: str = "onecycle") -> dict:
    """Train `model` from its current weights on uint8 NCHW `images` with int64 `labels`.

    `transform` (float NCHW -> float NCHW) runs after augmentation: the hook for training-time defences.
    `cfg.batch_defence` (CutMix, UEraser, ...; _augment.py) augments each batch where `transform` runs and computes
    the loss in place of the plain cross-entropy.
    `after_step` runs after every optimiser step (e.g. a projection of the weights, certify.recover).
    `schedule`: "onecycle" (warm-up then linear decay; victims) or "cosine" (fine-tuning from trained weights).
    Returns a small history dict (final train loss/accuracy, steps, seconds).
    """
    import time

    from tqdm.auto import tqdm

    from ._progress import progress_bars

    dev = device()
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    prepare(model, cfg, dev)
    defence = _batch_defence(cfg.batch_defence)
    n = len(images)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = max(1, steps_per_epoch * cfg.epochs)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                          weight_decay=cfg.weight_decay)
    if schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    else:
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=cfg.warmup,
                                                    anneal_strategy="linear", div_factor=25.0, final_div_factor=1e3)
    feed = Feed(images, labels.long(), dev, _RESIDENT_MAX_SHARE)   # on the device once when they fit
    t0 = time.perf_counter()
    loss_sum = correct = seen = 0.0
    bar = tqdm(total=total, desc=desc, unit="step", disable=not (progress and progress_bars()), leave=False)
    for epoch in range(cfg.epochs):
        model.train()
        # summed on the device, read once per epoch: a float() per step would wait for the GPU at every step
        loss_total = torch.zeros((), device=dev)
        correct_total = torch.zeros((), dtype=torch.long, device=dev)
        seen = 0
        for idx in feed.batches(cfg.batch_size, gen):
            x, y = feed.batch(idx)
            x = to_float(x, dev)
            if cfg.augment:
                x = crop_flip(x, gen)
            if transform is not None:
                x = transform(x)
            if defence is not None:
                x, target = defence.augment(x, y)
            if cfg.channels_last:
                x = x.contiguous(memory_format=memory_format(dev))
            if cfg.adversarial_epsilon:
                x = linf_adversarial(model, x, y, cfg.adversarial_epsilon, cfg.adversarial_steps, gen, cfg.bf16)
            with autocast(dev, cfg.bf16):
                if defence is None:
                    out = model(x)
                    loss = F.cross_entropy(out.float(), y, label_smoothing=cfg.label_smoothing)
                else:
                    loss, out = defence.loss(model, x, target, cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            if after_step is not None:
                after_step()
            loss_total += loss.detach() * len(idx)
            correct_total += (out.argmax(1) == y).sum()
            seen += len(idx)
            bar.update(1)
        loss_sum, correct = float(loss_total), float(correct_total)
        bar.set_postfix(epoch=epoch + 1, loss=f"{loss_sum / max(seen, 1):.3f}", acc=f"{correct / max(seen, 1):.3f}")
    bar.close()
    model.eval()
    return {"train_loss": loss_sum / max(seen, 1), "train_accuracy": correct / max(seen, 1), "steps": total,
            "seconds": time.perf_counter() - t0}


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, *, batch_size: int = 1000, bf16: bool = True,
            transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Arg-max predictions of `model` (eval mode) on uint8 NCHW images."""
    dev = device()
    model.eval()
    if resident(dev, _RESIDENT_MAX_SHARE, images):
        images = images.to(dev)
    preds = []           # kept on the device, read once: a .cpu() per batch would wait for the device each time
    for s in range(0, len(images), batch_size):
        x = to_float(to_device(images[s:s + batch_size], dev), dev)
        if transform is not None:
            x = transform(x)
        with autocast(dev, bf16):
            preds.append(model(x.contiguous(memory_format=memory_format(dev))).argmax(1))
    return torch.cat(preds).cpu() if preds else torch.empty(0, dtype=torch.long)


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, **kw) -> float:
    return float((predict(model, images, **kw) == labels.long()).float().mean()) if len(images) else float("nan")


class StepTrainer:
    """Plain SGD steps with no schedule, for surrogates trained in alternation with noise (EM's min-min).

    EM's inner loop (methods.md §2.2): SGD lr 0.1, momentum 0.9, wd 5e-4, grad-clip 5, no augmentation, x + delta
    clipped to [0, 1] (the §6.3 fix: crafting sees the same clipped images the release holds).
    """

    def __init__(self, model: nn.Module, *, lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 5e-4,
                 grad_clip: float | None = 5.0, bf16: bool = True):
        self.dev = device()
        self.model = prepare(model, TrainConfig(), self.dev)
        self.opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.grad_clip = grad_clip
        self.bf16 = bf16

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One SGD step on a float [0, 1] NCHW batch."""
        self.model.train()
        x = x.to(self.dev).contiguous(memory_format=memory_format(self.dev))
        with autocast(self.dev, self.bf16):
            loss = F.cross_entropy(self.model(x).float(), y.to(self.dev))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.opt.step()
        return float(loss.detach())

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The weights and the SGD momentum as flat named tensors: what a safetensors checkpoint stores, so that a
        resumed run continues exactly where it stopped."""
        out = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        for i, p in enumerate(self.opt.param_groups[0]["params"]):
            buf = self.opt.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                out[f"momentum.{i}"] = buf
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what `state_tensors` returned (other keys in `tensors` are ignored)."""
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        for i, p in enumerate(self.opt.param_groups[0]["params"]):
            if f"momentum.{i}" in tensors:
                self.opt.state[p]["momentum_buffer"] = tensors[f"momentum.{i}"].to(p.device).clone()
