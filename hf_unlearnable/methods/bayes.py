"""Bayes-error optimisation (BEO): Zhang, Sun, Lim, Zhang, arXiv 2511.08191 (AAAI 2026). Spec: methods.md §1.

The perturbations maximise an *estimate* of the Bayes error of the protected data: a leave-one-out
Nadaraya-Watson posterior with an RBF kernel on surrogate features (§1.3-§1.4), by projected gradient ascent
(signed steps, projection to the epsilon box and the [0, 1] image range after every step, §1.9).

Two forms:
- `protect(method="bayes")`: one batch at a time against a fixed surrogate (the bundled default unless
  `surrogate=`). The estimate couples the rows of a batch, so the bytes depend on how `Dataset.map` cuts the data
  into batches (deterministic for a given seed and batch partition). A batch must hold at least two classes
  (a single-class batch has nothing to overlap with and raises a ProtectionError; use a larger `batch_size` or
  shuffle first).
- `craft(ds, "bayes")`: the whole set. Stratified minibatches of `subset_size` rows, `passes` sweeps over the
  data, and every `refresh_every` passes a fresh surrogate trained on the current protected images (§1.9).
  Resumable from `checkpoint_dir`; records the whole-set estimate before and after (same features, same scale).
  By default it also averages each step over the victim's crop+flip, anchors every minibatch to clean rows of
  another one and adds a class-targeted term (`CRAFT_DEFAULTS`): the strongest setting on the mixing benchmark's
  validation split. The per-batch form takes two of them by default (`BATCH_DEFAULTS`: the crop+flip average and
  the targeted term; a batch has no other rows to anchor to).

The estimator and the pitfalls it handles: methods/_bayes_error.py; the options: methods/_bayes_config.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ProtectionError
from ._bayes_config import BATCH_DEFAULTS, CRAFT_DEFAULTS, BayesConfig
from ._bayes_error import bayes_error, feature_scale
from ._checkpoint import _Checkpoint, _fingerprint, _weights_digest
from ._pgd import signed_pgd
from ._registry import register
from .base import Crafted, SurrogateMethod

logger = logging.getLogger(__name__)


@torch.no_grad()
def nearest_class_map(model, images, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """For each class c, the other class that the model's mean softmax over the rows of class c favours most
    (cat -> dog, automobile -> truck); a class with no rows maps to c + 1. `images`: an iterable of float [0, 1]
    NCHW batches in the order of `labels`. Pushing a row toward its nearest wrong class is the cheapest way to
    make it overlap another class, and the push transfers to models that never saw the surrogate (README, Mixing)."""
    mass = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    seen = 0
    for x in images:
        p = F.softmax(model(x).float(), 1)[:, :num_classes].double().cpu()
        mass.index_add_(0, labels[seen:seen + len(x)].cpu().long(), p)
        seen += len(x)
    mass.fill_diagonal_(-1.0)
    out = mass.argmax(1)
    empty = mass.clamp_min(0).sum(1) == 0
    out[empty] = (torch.arange(num_classes)[empty] + 1) % num_classes
    return out


def _surrogate_outputs(model, x: torch.Tensor, batch: int, bf16: bool = False, logits: bool = False):
    """The surrogate's features of float images (with `logits`, the pair (features, logits) from one forward pass),
    in slices of `batch`, as fp32.

    With `bf16`, the surrogate runs under bf16 autocast on channels_last input where the hardware has native bf16
    (training.fast_bf16: CUDA, AVX-512-bf16/AMX CPUs; elsewhere a no-op): 2.7x faster forward+backward on this
    project's CPU. The kernel estimate itself stays fp32. The surrogate's own weights are not converted (it may be a
    shared, cached object)."""
    from ..training import autocast, fast_bf16, memory_format

    fast = bf16 and fast_bf16(x.device.type)
    fn = model.features_and_logits if logits else model.features
    with autocast(x.device, fast):
        out = [fn(x[s:s + batch].contiguous(memory_format=memory_format(x.device)) if fast else x[s:s + batch])
               for s in range(0, len(x), batch)]
    if logits:
        return torch.cat([z for z, _ in out]).float(), torch.cat([lg for _, lg in out]).float()
    return torch.cat(out).float()


def _l1_rows(g: torch.Tensor) -> torch.Tensor:
    return g / g.flatten(1).abs().sum(1).clamp_min(1e-20).view(-1, *[1] * (g.ndim - 1))


def stratified_batches(labels: np.ndarray, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A random partition of all rows into batches of about `size` with every class in proportion."""
    keys = np.empty(len(labels))
    for k in np.unique(labels):
        rows = np.flatnonzero(labels == k)
        # evenly spaced ranks in [0, 1) per class, jittered: sorting them interleaves the classes
        keys[rng.permutation(rows)] = (np.arange(len(rows)) + rng.random(len(rows))) / len(rows)
    order = np.argsort(keys, kind="stable")
    n_batches = max(1, round(len(labels) / size))
    return [b for b in np.array_split(order, n_batches) if len(b)]


@register
class BayesErrorOptimisation(SurrogateMethod):
    name = "bayes"
    config_class = BayesConfig
    uses_labels = True
    batch_coupled = True         # the Bayes-error estimate is over the batch's rows together
    splits_across_processes = True
    _target_map: torch.Tensor | None = None   # the targeted term's class per label, set per form by _choose_targets

    def _resolved(self, form: str, data_len: int, num_classes: int, class_names=None) -> BayesConfig:
        """The config with every None option chosen for `form` ("craft" or "batch"), as recorded in the Noise."""
        cfg = self.config
        auto = {k: v for k, v in (CRAFT_DEFAULTS if form == "craft" else BATCH_DEFAULTS).items()
                if getattr(cfg, k) is None}
        if form == "craft" and auto.get("clean_anchors") and data_len < 4:
            auto["clean_anchors"] = False                           # too few rows for two minibatches
        if auto.get("targeted_weight"):
            sur = self.surrogate
            sur_classes = getattr(sur, "num_classes", None)
            names = getattr(getattr(sur, "config", None), "class_names", None)
            if form == "craft":
                other = sur_classes != num_classes or bool(names and class_names and list(names) != list(class_names))
            else:   # a batch knows its labels, not the dataset's classes: the surrogate must cover the labels
                other = sur_classes is None or sur_classes < num_classes
            if other:
                auto["targeted_weight"] = 0.0
                logger.info("bayes: the surrogate's classes are not the data's; no targeted term (pass "
                            "targeted_weight= to force one)")
        return dataclasses.replace(cfg, **auto) if auto else cfg

    @contextlib.contextmanager
    def _config_for(self, form: str, data_len: int, num_classes: int, class_names=None):
        """Run one form with its resolved config; the user's config (with its Nones) is back afterwards."""
        saved = self.config
        self.config = self._resolved(form, data_len, num_classes, class_names)
        try:
            yield self.config
        finally:
            self.config = saved

    def _choose_targets(self, model, images, labels: torch.Tensor, num_classes: int) -> None:
        """Fix the targeted term's class per label (config.target) from the clean images, before any step."""
        if self.config.targeted_weight and self.config.target == "nearest":
            self._target_map = nearest_class_map(model, images, labels, num_classes)
        else:
            self._target_map = (torch.arange(num_classes) + 1) % num_classes

    def _ascent_direction(self, model, x_adv: torch.Tensor, y: torch.Tensor, num_classes: int,
                          scale: torch.Tensor, gen: torch.Generator | None = None,
                          anchors: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, float]:
        """Gradient of the objective w.r.t. x_adv (surrogate frozen, eval mode) and the estimate's value.

        With `augment_draws` (and a generator), the gradient is the mean over random crop+flips of x_adv: a
        victim trained with augmentation never sees the stored image itself (methods.md §6.5). With `anchors`
        (clean images of other rows and their labels), the estimate is that of the union: the anchors are fixed
        points, so only x_adv moves, toward the clean rows of other classes."""
        from ..training import crop_flip

        cfg = self.config
        draws = cfg.augment_draws if (cfg.augment_draws and gen is not None) else 0
        grad = torch.zeros_like(x_adv)
        values = []
        for _ in range(max(1, draws)):
            x_in = x_adv.detach().requires_grad_(True)
            x_t = crop_flip(x_in, gen) if draws else x_in
            # with the targeted term, one forward pass gives the features and the logits of the same crop
            if cfg.targeted_weight:
                z, logits = _surrogate_outputs(model, x_t, cfg.feature_batch, cfg.bf16, logits=True)
            else:
                z, logits = _surrogate_outputs(model, x_t, cfg.feature_batch, cfg.bf16), None
            z = z / scale
            y_all = y
            if anchors is not None:
                with torch.no_grad():
                    x_a = crop_flip(anchors[0], gen) if draws else anchors[0]
                    z_a = _surrogate_outputs(model, x_a, cfg.feature_batch, cfg.bf16) / scale
                z = torch.cat([z, z_a])
                y_all = torch.cat([y, anchors[1]])
            value = bayes_error(z, y_all, num_classes, sigma=cfg.sigma, chunk_size=cfg.chunk_size)
            (g,) = torch.autograd.grad(value, x_in, retain_graph=logits is not None)
            if logits is not None:  # targeted_weight None (unresolved) or 0 = off
                if logits.shape[1] < num_classes:
                    raise ProtectionError(f"targeted_weight needs a surrogate with >= {num_classes} classes; "
                                          f"this one has {logits.shape[1]}.")
                tmap = self._target_map                      # None for direct callers: y+1
                target = tmap.to(y.device)[y] if tmap is not None else (y + 1) % num_classes
                (g_t,) = torch.autograd.grad(-F.cross_entropy(logits, target, reduction="sum"), x_in)
                g = _l1_rows(g) + cfg.targeted_weight * _l1_rows(g_t)
            grad += g
            values.append(float(value.detach()))
        return grad, float(np.mean(values))

    def _ascend(self, model, x: torch.Tensor, y: torch.Tensor, delta: torch.Tensor, steps: int, num_classes: int,
                scale: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        cfg = self.config
        return signed_pgd(x, delta, lambda x_adv, _: self._ascent_direction(model, x_adv, y, num_classes, scale, gen)[0],
                          epsilon=cfg.epsilon, step_size=cfg.step_size, steps=steps, maximise=True)

    # -- per-batch form -----------------------------------------------------------------------------------------
    def perturb(self, images: np.ndarray, labels: np.ndarray | None, ids: list[str]) -> np.ndarray:
        # the labels' range stands in for the dataset's classes (a batch sees nothing else)
        with self._config_for("batch", len(images), int(labels.max()) + 1 if labels is not None and len(labels) else 0):
            return self._perturb(images, labels, ids)

    def _perturb(self, images: np.ndarray, labels: np.ndarray | None, ids: list[str]) -> np.ndarray:
        from .._images import row_rng, to_tensor
        from ..training import device

        if labels is None:
            raise ProtectionError("bayes needs labels: the dataset has no label column (pass label_column=...).")
        if self.config.clean_anchors:
            raise ProtectionError("clean_anchors=True needs rows outside the batch; it applies to craft(ds, 'bayes') "
                                  "only. Drop it for protect(method='bayes').")
        if len(np.unique(labels)) < 2:
            raise ProtectionError(
                f"bayes: a batch of {len(labels)} row(s) ({ids[0] if ids else '?'} ...) holds a single class "
                f"({int(labels[0])}); the Bayes-error estimate needs at least two classes per batch. Use a larger "
                "batch_size in Dataset.map, shuffle the dataset first, or craft over the whole set: "
                "craft(ds, 'bayes').")
        dev = device()
        model = self.surrogate.to(dev).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        x = to_tensor(images).to(dev)
        if hasattr(model, "calibrate"):
            model.calibrate(x)
        y = torch.as_tensor(labels, dtype=torch.long, device=dev)
        num_classes = max(int(y.max()) + 1, getattr(self.surrogate, "num_classes", 0))
        with torch.no_grad():
            scale = feature_scale(_surrogate_outputs(model, x, self.config.feature_batch, self.config.bf16))
        self._choose_targets(model, [x], y, num_classes)
        # augmentation draws seeded by the seed and the batch's first row id: same batch partition, same bytes
        gen = torch.Generator().manual_seed(int(row_rng(self.config.seed, ids[0]).integers(2**62)))
        delta = self._ascend(model, x, y, self._start(x.shape, ids).to(dev), self.config.steps, num_classes, scale,
                             gen)
        return delta.permute(0, 2, 3, 1).cpu().numpy()

    # -- whole-set form -----------------------------------------------------------------------------------------
    def _estimate(self, model, images: torch.Tensor, delta: torch.Tensor, labels: torch.Tensor, num_classes: int,
                  scale: torch.Tensor) -> float:
        """Whole-set estimate on the uint8-quantised images the release will hold."""
        from ..training import device, to_float

        dev = device()
        steps = torch.round(delta * 255)
        with torch.no_grad():
            feats = []
            for s in range(0, len(images), 1000):
                x = (to_float(images[s:s + 1000], dev) * 255 + steps[s:s + 1000].to(dev)).clamp(0, 255) / 255
                feats.append(model.features(x))
            z = torch.cat(feats) / scale
            return float(bayes_error(z, labels.to(dev), num_classes, sigma=self.config.sigma,
                                     chunk_size=self.config.chunk_size))

    def _fresh_surrogate(self, images: torch.Tensor, delta: torch.Tensor, labels: torch.Tensor, num_classes: int,
                         seed: int):
        """A new surrogate trained from scratch on the current protected (uint8-rounded) images."""
        from ..surrogates.nets import build
        from ..training import TrainConfig, fit

        cfg = self.config
        protected = (images.float() + torch.round(delta * 255)).clamp(0, 255).to(torch.uint8)
        with torch.random.fork_rng():   # the initial weights depend on this refresh's seed only (resume = same bytes)
            torch.manual_seed(seed)
            net = build(cfg.surrogate_arch, num_classes, cfg.surrogate_width)
        fit(net, protected, labels, TrainConfig(epochs=cfg.surrogate_epochs, augment=cfg.surrogate_augment),
            seed=seed, desc="bayes surrogate refresh")
        return net.eval()

    def _craft(self, data, checkpoint_dir=None):
        with self._config_for("craft", len(data), data.num_classes, data.class_names):
            return self._craft_passes(data, checkpoint_dir)

    def _craft_passes(self, data, checkpoint_dir=None):
        from tqdm.auto import tqdm

        from .._distributed import process_group, rows_of
        from .._progress import progress_bars
        from ..training import device, to_float

        cfg = self.config
        images, labels = self._craft_inputs(data)
        if cfg.clean_anchors and len(data.labels) < 4:
            raise ProtectionError(f"clean_anchors=True needs at least 4 rows (two minibatches); got "
                                  f"{len(data.labels)}.")
        group = process_group()      # under accelerate launch / torchrun: this process's share of each pass
        dev = group.device or device()
        num_classes = data.num_classes
        delta = self._start(tuple(images.shape), data.ids)

        reference = self.surrogate.to(dev).eval()          # fixed features for the before/after estimate
        for p in reference.parameters():
            p.requires_grad_(False)
        if hasattr(reference, "calibrate"):   # an ensemble fixes each member's feature scale on the clean images
            reference.calibrate(to_float(images[s:s + 1000], dev) for s in range(0, len(images), 1000))
        with torch.no_grad():
            ref_scale = feature_scale(torch.cat([reference.features(to_float(images[s:s + 1000], dev))
                                                 for s in range(0, len(images), 1000)]))
        self._choose_targets(reference, (to_float(images[s:s + 1000], dev) for s in range(0, len(images), 1000)),
                             labels, num_classes)
        # "draws": augmentation streams per pass and minibatch (earlier checkpoints had one stream per pass and would
        # resume into other bytes, so they are refused as "other options")
        # the config records a surrogate by name only; its weights' digest tells two surrogates of one name apart
        ckpt = _Checkpoint(checkpoint_dir, {"method": self.name, "draws": "per-minibatch",
                                            "surrogate_weights": _weights_digest(reference),
                                            **{k: v for k, v in cfg.to_dict().items() if k != "passes"}},
                           _fingerprint(data))
        start, history, model, before = 0, [], reference, None
        resumed = ckpt.load()
        if resumed is not None:
            info, tensors = resumed
            delta = tensors["delta"]
            start, history, before = info["pass"], info["history"], info["before"]
            if info.get("refreshed"):
                from ..surrogates.nets import build

                model = build(cfg.surrogate_arch, num_classes, cfg.surrogate_width)
                model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
                model = model.to(dev).eval()
            logger.info("resuming bayes from %s at pass %d", checkpoint_dir, start)
        group.agree("the pass to resume at", start)
        if before is None:
            before = self._estimate(reference, images, delta, labels, num_classes, ref_scale)

        bar = tqdm(total=cfg.passes, initial=start, desc="bayes ascent", unit="pass",
                   disable=not (group.is_main and progress_bars()))
        ascents = 0     # minibatches this process ascended (its share of the work)
        for p in range(start, cfg.passes):
            if cfg.refresh_every and p > 0 and p % cfg.refresh_every == 0:
                model = self._fresh_surrogate(images, delta, labels, num_classes, cfg.seed + p).to(dev)
                group.same_as_main(list(model.state_dict().values()))
            for q in model.parameters():
                q.requires_grad_(False)
            model.eval()
            with torch.no_grad():   # the global max-abs: each process takes its chunks, the largest wins
                starts = list(range(0, len(images), 1000))
                local = [feature_scale(_surrogate_outputs(
                    model, (to_float(images[s:s + 1000], dev) + delta[s:s + 1000].to(dev)).clamp(0, 1),
                    cfg.feature_batch, cfg.bf16))
                    for s in (starts[i] for i in group.mine(starts))]
                scale = group.largest(torch.stack(local).max() if local else torch.zeros((), device=dev))
                scale = scale.clamp_min(1e-12)
            rng = np.random.default_rng([cfg.seed, p])
            # with clean anchors, at least two minibatches: each one's anchors are the next one's clean rows (never
            # a row's own clean twin, which a mix does not hold beside it)
            size = min(cfg.subset_size, max(2, len(labels) // 2)) if cfg.clean_anchors else cfg.subset_size
            batches = stratified_batches(data.labels, size, rng)
            ascended = [b for b, idx in enumerate(batches) if len(np.unique(data.labels[idx])) >= 2]
            # a minibatch's update reads only its own rows, the frozen surrogate and clean anchors, so the
            # minibatches of a pass split across processes; the estimates are kept per minibatch, in order
            values = torch.zeros(len(batches), cfg.steps_per_batch, dtype=torch.float64)
            mine = [ascended[i] for i in group.mine(ascended)]
            for b in mine:
                ascents += 1
                idx = batches[b]
                # augmentation draws: a stream per pass and minibatch (resume and any process count give the
                # same bytes)
                gen = torch.Generator().manual_seed(int(np.random.default_rng([cfg.seed, p, 1, b]).integers(2**62)))
                x = to_float(images[idx], dev)
                y = labels[idx].to(dev)
                anchors = None
                if cfg.clean_anchors:
                    other = batches[(b + 1) % len(batches)]
                    anchors = (to_float(images[other], dev), labels[other].to(dev))

                def gradient(x_adv, k, b=b, y=y, gen=gen, anchors=anchors):
                    grad, values[b, k] = self._ascent_direction(model, x_adv, y, num_classes, scale, gen, anchors)
                    return grad

                delta[idx] = signed_pgd(x, delta[idx].to(dev), gradient, epsilon=cfg.epsilon,
                                        step_size=cfg.step_size, steps=cfg.steps_per_batch, maximise=True).cpu()
            group.share_rows(delta, rows_of(batches, mine), rows_of(batches, ascended))
            group.share_rows(values, np.asarray(mine, dtype=int), np.asarray(ascended, dtype=int))
            history.append({"pass": p + 1,
                            "minibatch_estimate": float(values[ascended].mean()) if ascended else None,
                            "refreshed": model is not reference})
            tensors = {"delta": delta}
            if model is not reference:
                tensors.update({f"model.{k}": v for k, v in model.state_dict().items()})
            if group.is_main:
                ckpt.save({"pass": p + 1, "history": history, "before": before,
                           "refreshed": model is not reference}, tensors)
            bar.update(1)
            bar.set_postfix(estimate=f"{history[-1]['minibatch_estimate'] or 0:.3f}")
        bar.close()
        if group.size > 1:
            logger.info("bayes: process %d of %d ascended %d minibatches in %d passes", group.rank, group.size,
                        ascents, cfg.passes - start)
        after = self._estimate(reference, images, delta, labels, num_classes, ref_scale)
        logger.info("bayes: whole-set Bayes-error estimate %.4f -> %.4f", before, after)
        stats = {"bayes_error_before": before, "bayes_error_after": after, "passes": len(history),
                 "history": history}
        if cfg.targeted_weight:
            stats["target_map"] = [int(t) for t in self._target_map]
        return Crafted(delta.permute(0, 2, 3, 1).numpy(), "samplewise", stats, method_config=cfg.to_dict())
