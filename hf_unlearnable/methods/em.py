"""Error-minimising noise (EM): Huang, Ma, Erfani, Bailey, Wang, "Unlearnable Examples: Making Personal Data
Unexploitable", ICLR 2021 (arXiv 2101.04898). Spec: methods.md §2.

Two forms:
- `craft(ds, "em", mode="samplewise"|"classwise")`: the paper's bi-level min-min. A fresh surrogate and the noise
  are optimised in alternation: M SGD steps on x + delta, then PGD that *minimises* the loss w.r.t. delta over
  the whole set (sample-wise) or over a stratified subset of up to 10,000 rows (class-wise: each class's pattern
  takes signed steps on the gradient summed over its rows; `class_step="mean"` averages the rows' own steps as
  the reference code does), until the surrogate fits the perturbed data (train error < stop_error), after at
  least `min_iters` rounds (cpu-training.md: on easy data the error rule fires before the noise works).
- `protect(method="em")`: one batch at a time, error-minimising PGD against a *fixed*, already trained surrogate
  (the bundled default unless `surrogate=`). Cheaper and streamable, but weaker than the min-min: use `craft`
  for the paper's algorithm.

Fixes over the released code: negative noise is kept (noise added to the image, then the image clipped;
§6.2), release rounds instead of truncating (§6.1), crafting sees the same [0, 1]-clipped images the release
holds and stores the effective delta (§6.3), sample-wise noise is keyed by row id, not position (§6.6).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ProtectionError
from ._registry import register
from ._checkpoint import _Checkpoint, _fingerprint
from ._pgd import signed_pgd
from .base import Crafted, LabelledSurrogateMethod, MethodConfig

logger = logging.getLogger(__name__)

MODES = ("samplewise", "classwise")
SUBSET_ROWS = 10_000       # class-wise: rows the noise is fitted on by default (the paper's 10k CIFAR-10 subset)
CLASS_STEPS = ("sign", "mean")


@dataclass
class EMConfig(MethodConfig):
    """EM options; defaults are the paper's CIFAR-10 values (methods.md §2.2, §2.3) unless noted."""

    mode: str = "samplewise"            # "samplewise" (one delta per row) or "classwise" (one per class)
    step_size: float = 0.8 / 255        # PGD step alpha
    steps: int | None = None            # PGD steps per noise update: 20 sample-wise, 1 class-wise (paper)
    train_steps: int = 10               # M: surrogate SGD steps between noise updates
    batch_size: int = 512
    noise_batch_size: int | None = None  # rows per noise update; None: batch_size (sample-wise), and for class-wise
                                         # about 20 updates per round, as the paper's 10k subset / 512 gives
    stop_error: float = 0.01            # stop once the surrogate's error on x + delta is below this
    min_iters: int = 10                 # safety floor on outer rounds (not in the paper; cpu-training.md)
    max_iters: int = 40                 # ceiling on outer rounds (not in the paper)
    subset: float | None = None         # class-wise: stratified fraction of the rows the noise is fitted on;
                                        # None: all rows up to SUBSET_ROWS (the paper's 20 % of CIFAR-10's 50k)
    class_step: str = "sign"            # class-wise noise update: "sign", a signed step on the gradient summed over
                                        # the class's rows (PGD on the shared pattern); "mean", the mean of the rows'
                                        # own signed steps (the reference code's: a smaller pattern that protects
                                        # less, benchmarks/results/anydata-classwise-probe.md)
    lr: float = 0.1                     # surrogate SGD learning rate while crafting
    surrogate_arch: str = "convnet"     # craft: architecture of the fresh surrogate ("resnet18" is the paper's)
    surrogate_width: int | None = None
    random_start: bool | None = None    # start delta at U(-eps, eps) (seeded per row) instead of 0; None: on per
                                        # batch (so that seed= matters there), off in craft (the paper's start)
    surrogate: Any = None               # per-batch form: fixed surrogate (None = bundled default, or a path)

    def validate(self) -> None:
        super().validate()
        if self.mode not in MODES:
            raise ProtectionError(f"mode={self.mode!r} is not one of {MODES}.")
        if self.steps is None:
            self.steps = 20 if self.mode == "samplewise" else 1
        if self.noise_batch_size is not None and (not isinstance(self.noise_batch_size, int)
                                                  or self.noise_batch_size < 1):
            raise ProtectionError(f"noise_batch_size={self.noise_batch_size!r} must be a positive integer or None.")
        for name in ("steps", "train_steps", "batch_size", "min_iters", "max_iters"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < (0 if name == "train_steps" else 1):
                raise ProtectionError(f"{name}={v!r} must be a positive integer.")
        if self.min_iters > self.max_iters:
            raise ProtectionError(f"min_iters={self.min_iters} exceeds max_iters={self.max_iters}; for a shorter run "
                                  f"lower both (e.g. min_iters={self.max_iters}, max_iters={self.max_iters}).")
        if self.subset is not None and not 0 < self.subset <= 1:
            raise ProtectionError(f"subset={self.subset!r} must be in (0, 1], or None (all rows up to {SUBSET_ROWS:,}).")
        if self.class_step not in CLASS_STEPS:
            raise ProtectionError(f"class_step={self.class_step!r} is not one of {CLASS_STEPS}.")
        if not 0 <= self.stop_error < 1:
            raise ProtectionError(f"stop_error={self.stop_error!r} must be in [0, 1).")
        if not 0 < self.step_size <= self.epsilon:
            raise ProtectionError(f"step_size={self.step_size!r} must be in (0, epsilon].")
        if not self.lr > 0:
            raise ProtectionError(f"lr={self.lr!r} must be a positive number.")


def pgd_min(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, delta: torch.Tensor, *, epsilon: float,
            step_size: float, steps: int, bf16: bool = True) -> torch.Tensor:
    """Error-*minimising* signed PGD on delta (model in eval mode, weights untouched).

    Projection after every step onto the epsilon box and the [0, 1] image range; returns the effective delta
    (x' - x), so what was optimised is exactly what is released.
    """
    from ..training import autocast, memory_format

    was_training = model.training
    model.eval()
    dev = x.device

    def gradient(x_adv: torch.Tensor, _step: int) -> torch.Tensor:
        x_adv = x_adv.detach().requires_grad_(True)
        with autocast(dev, bf16):
            loss = F.cross_entropy(model(x_adv.contiguous(memory_format=memory_format(dev))).float(), y)
        return torch.autograd.grad(loss, x_adv)[0]

    out = signed_pgd(x, delta, gradient, epsilon=epsilon, step_size=step_size, steps=steps, maximise=False)
    model.train(was_training)
    return out


def pgd_min_classwise(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, class_delta: torch.Tensor, *,
                      epsilon: float, step_size: float, steps: int, bf16: bool = True) -> torch.Tensor:
    """Class-wise error-*minimising* PGD: each class present in the batch moves its one pattern by a signed step on
    the loss gradient summed over its rows (indexing the patterns by label sums it). Returns all K patterns."""
    from ..training import autocast, memory_format

    was_training = model.training
    model.eval()
    dev = x.device
    classes, position = torch.unique(y, return_inverse=True)
    out = class_delta.clone()
    d = out[classes]
    for _ in range(steps):
        d = d.detach().requires_grad_(True)
        x_adv = (x + d[position]).clamp(0, 1)
        with autocast(dev, bf16):
            loss = F.cross_entropy(model(x_adv.contiguous(memory_format=memory_format(dev))).float(), y,
                                   reduction="sum")
        (grad,) = torch.autograd.grad(loss, d)
        d = (d.detach() - step_size * grad.sign()).clamp(-epsilon, epsilon)
    model.train(was_training)
    out[classes] = d
    return out


def classwise_average(eta: torch.Tensor, y: torch.Tensor, class_delta: torch.Tensor, epsilon: float) -> torch.Tensor:
    """EM class-wise update: each class present in the batch takes the mean of its rows' deltas (clipped)."""
    out = class_delta.clone()
    for k in torch.unique(y).tolist():
        out[k] = eta[y == k].mean(0).clamp(-epsilon, epsilon)
    return out


def stratified_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted row positions: the same fraction of every class, drawn with a fixed seed."""
    rng = np.random.default_rng(seed)
    pick = []
    for k in np.unique(labels):
        rows = np.flatnonzero(labels == k)
        n = max(1, int(round(fraction * len(rows))))
        pick.append(rng.choice(rows, size=n, replace=False))
    return np.sort(np.concatenate(pick))


@register
class ErrorMinimizing(LabelledSurrogateMethod):
    name = "em"
    config_class = EMConfig
    splits_across_processes = True
    splits_note = " (sample-wise only)"

    @classmethod
    def splits(cls, config) -> bool:
        """Sample-wise only: class-wise noise updates feed each other in order."""
        return cls.splits_across_processes and config.mode == "samplewise"

    # -- per-batch form -----------------------------------------------------------------------------------------
    def perturb(self, images: np.ndarray, labels: np.ndarray | None, ids: list[str]) -> np.ndarray:
        cfg = self.config

        def chunk(model, x, y, delta, rows):
            return pgd_min(model, x, y, delta, epsilon=cfg.epsilon, step_size=cfg.step_size, steps=cfg.steps,
                           bf16=False)

        return self._pgd_per_batch(images, labels, ids, cfg.random_start is not False, chunk)

    # -- dataset-level min-min ----------------------------------------------------------------------------------
    def _surrogate_step(self, trainer, x: torch.Tensor, y: torch.Tensor, history: list[dict]) -> float:
        """One surrogate update on a perturbed batch (the 'outer min'); PUE overrides it."""
        return trainer.step(x, y)

    def _noise_step(self, model, x: torch.Tensor, y: torch.Tensor, delta: torch.Tensor,
                    history: list[dict], ids=None) -> torch.Tensor:
        """Per-sample noise update against the frozen surrogate (the 'inner min'); PUE and REM override it (`ids`:
        the rows' ids, REM's per-row random streams)."""
        cfg = self.config
        return pgd_min(model, x, y, delta, epsilon=cfg.epsilon, step_size=cfg.step_size, steps=cfg.steps)

    def _craft(self, data, checkpoint_dir=None):
        from tqdm.auto import tqdm

        from .._distributed import process_group, rows_of
        from .._progress import progress_bars
        from ..surrogates.nets import build
        from ..training import StepTrainer, autocast, device, memory_format, to_float

        import dataclasses

        # the min-min starts from zero unless asked (random_start=None means off here): recorded as False, as before
        self.config = dataclasses.replace(self.config, random_start=bool(self.config.random_start))
        cfg = self.config
        images, labels = self._craft_inputs(data)
        group = process_group()
        dev = group.device or device()
        num_classes = data.num_classes
        subset = cfg.subset if cfg.subset is not None else min(1.0, SUBSET_ROWS / len(data))
        rows = (np.arange(len(data)) if cfg.mode == "samplewise"
                else stratified_subset(data.labels, subset, cfg.seed))
        n_rows = len(rows)
        bs = min(cfg.batch_size, n_rows)   # never train on one small set repeated within a batch
        nbs = cfg.noise_batch_size or (bs if cfg.mode == "samplewise" else max(16, min(bs, n_rows // 20)))
        trainer = StepTrainer(build(cfg.surrogate_arch, num_classes, cfg.surrogate_width), lr=cfg.lr)
        if cfg.mode == "samplewise":
            delta = self._start((len(data), *images.shape[1:]), data.ids)
        else:
            delta = torch.zeros((num_classes, *images.shape[1:]))
            if cfg.random_start:
                g = torch.Generator().manual_seed(cfg.seed)
                delta = (torch.rand(delta.shape, generator=g) * 2 - 1) * cfg.epsilon
        # Stopping options may change between runs (extend a run with more rounds); everything else must match.
        # the surrogate trains on the rows in a seeded shuffled order: in dataset order an image folder (sorted by
        # class) gives batches of one or two classes and the min-min never converges (error 0.15-0.25 after 40
        # rounds on 10k class-sorted rows, against 0.002 after 10 shuffled). Checkpoints of the unshuffled order
        # are refused as other options
        train_order = rows[np.random.default_rng([cfg.seed, 3]).permutation(n_rows)]
        stopping = ("min_iters", "max_iters", "stop_error")
        ckpt = _Checkpoint(checkpoint_dir, {"method": self.name, "train_order": "shuffled",
                                            **{k: v for k, v in self.config.to_dict().items() if k not in stopping}},
                           _fingerprint(data))
        start_iter, cursor, history = 0, 0, []
        resumed = ckpt.load()
        if resumed is not None:
            info, tensors = resumed
            delta = tensors["delta"]
            trainer.load_state_tensors(tensors)
            start_iter, cursor, history = info["iteration"], info["cursor"], info["history"]
            logger.info("resuming EM from %s at round %d", checkpoint_dir, start_iter)
        group.agree("the round to resume at", start_iter)

        def batch_of(start: int) -> np.ndarray:
            return train_order[np.arange(start, start + bs) % n_rows]

        def perturbed(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            x = to_float(images[idx], dev)
            y = labels[idx].to(dev)
            d = delta[idx] if cfg.mode == "samplewise" else delta[labels[idx]]
            return (x + d.to(dev)).clamp(0, 1), y

        done = bool(history) and history[-1].get("stopped", False) and len(history) >= cfg.min_iters
        bar = tqdm(total=cfg.max_iters, initial=start_iter, desc=f"{self.name} {cfg.mode} min-min", unit="round",
                   disable=not (group.is_main and progress_bars()))
        it = start_iter
        noise_batches = 0     # noise batches this process updated (its share of the work)
        while not done and it < cfg.max_iters:
            # (a) M surrogate steps on perturbed data, continuing through the data in a fixed order
            losses = []
            for _ in range(cfg.train_steps):
                x, y = perturbed(batch_of(cursor))
                cursor = (cursor + bs) % n_rows
                losses.append(self._surrogate_step(trainer, x, y, history))
            # every process trained the same surrogate; take the main one's (GPU training drifts apart)
            group.same_as_main(list(trainer.state_tensors().values()))
            # (b) noise update over every row (sample-wise) or the subset (class-wise), surrogate frozen. Across
            # processes (sample-wise) each takes its share of the noise batches; every process trains the same
            # surrogate in (a), so the rows are summed back and the next round starts equal everywhere
            model = trainer.model
            batches = [rows[s:s + nbs] for s in range(0, n_rows, nbs)]
            mine = group.mine(batches)
            for i in mine:
                noise_batches += 1
                idx = batches[i]
                x = to_float(images[idx], dev)
                y = labels[idx].to(dev)
                if cfg.mode == "samplewise":
                    delta[idx] = self._noise_step(model, x, y, delta[idx].to(dev), history,
                                                  ids=[data.ids[i] for i in idx]).cpu()
                elif cfg.class_step == "sign":
                    delta = pgd_min_classwise(model, x, y, delta.to(dev), epsilon=cfg.epsilon,
                                              step_size=cfg.step_size, steps=cfg.steps).cpu()
                else:
                    eta = self._noise_step(model, x, y, delta[labels[idx]].to(dev), history)
                    delta = classwise_average(eta.cpu(), labels[idx], delta, cfg.epsilon)
            group.share_rows(delta, rows_of(batches, mine), rows)
            # (c) the surrogate's error on the perturbed rows (eval mode, no augmentation: §6.7), each process
            # counting its chunks
            chunks = list(range(0, n_rows, 1000))
            correct = torch.zeros(len(chunks), dtype=torch.float64)
            with torch.no_grad():
                model.eval()
                for i in group.mine(chunks):
                    x, y = perturbed(rows[chunks[i]:chunks[i] + 1000])
                    with autocast(dev):
                        correct[i] = int((model(x.contiguous(memory_format=memory_format(dev))).argmax(1) == y).sum())
            group.share_rows(correct, np.asarray(group.mine(chunks), dtype=np.int64), np.arange(len(chunks)))
            correct = int(correct.sum())
            error = 1 - correct / n_rows
            it += 1
            stopped = it >= cfg.min_iters and error < cfg.stop_error
            history.append({"round": it, "train_loss": float(np.mean(losses)) if losses else None,
                            "error": error, "stopped": stopped})
            if group.is_main:
                ckpt.save({"iteration": it, "cursor": cursor, "history": history},
                          {"delta": delta, **trainer.state_tensors()})
            bar.update(1)
            bar.set_postfix(error=f"{error:.4f}")
            done = stopped
        bar.close()
        if group.size > 1:
            logger.info("%s: process %d of %d updated %d noise batches in %d rounds", self.name, group.rank,
                        group.size, noise_batches, it - start_iter)
        if not done:
            logger.warning("%s stopped at max_iters=%d with surrogate error %.4f (target < %.4f)", self.name, cfg.max_iters,
                           history[-1]["error"] if history else float("nan"), cfg.stop_error)
        stats = {"rounds": len(history), "final_error": history[-1]["error"] if history else None,
                 "reached_stop_error": done, "rows_fitted": n_rows, "history": history}
        return Crafted(delta.permute(0, 2, 3, 1).numpy(), cfg.mode, stats)

