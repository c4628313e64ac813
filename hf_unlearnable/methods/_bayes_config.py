"""bayes' options: the config class with its checks, and the defaults each form (craft, per batch) fills in for
options left at None."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ProtectionError
from ._bayes_error import check_sigma
from .base import MethodConfig


@dataclass
class BayesConfig(MethodConfig):
    """BEO options. The paper's step size and iteration counts are unknown (§1.8); defaults follow §1.9."""

    sigma: float = 0.3                  # RBF kernel width on max-abs-normalised features
    step_size: float | None = None      # signed ascent step; None = epsilon / 10
    steps: int = 20                     # per-batch form: ascent steps per batch
    chunk_size: int = 512               # rows per chunk of the estimator (memory O(chunk x N))
    feature_batch: int = 512            # images per surrogate forward/backward (memory)
    surrogate: Any = None               # fixed surrogate (None = bundled default, a path, or a Surrogate)
    random_start: bool = False          # start delta at U(-eps, eps) (per-row seeded) instead of 0
    # None below = chosen per form: CRAFT_DEFAULTS in craft(), BATCH_DEFAULTS per batch
    targeted_weight: float | None = None  # >0 adds a class-targeted term (toward a wrong class, §1.10 'not tried');
                                        # per-row gradients are L1-normalised before mixing, so this is a ratio.
                                        # craft's default applies only when the surrogate's classes are the data's
    target: str = "next"                # the targeted term's class per label: "next" = y+1 (mod K); "nearest" =
                                        # the other class the surrogate's mean softmax favours most on the clean
                                        # rows of class y (cat -> dog), fixed before the ascent and recorded
    augment_draws: int | None = None    # >0: average each step's gradient over this many random crop+flips
                                        # (expectation over the victim's augmentation); 0 = the plain image
    bf16: bool = True                   # surrogate forward/backward of the ascent in bf16 autocast where the
                                        # hardware has native bf16 (as the victims train); the kernel stays fp32,
                                        # the before/after estimates too. False = fp32 everywhere (other bytes)
    # craft (whole set) only
    passes: int = 20                    # sweeps over all rows
    subset_size: int = 2048             # rows per stratified ascent minibatch
    steps_per_batch: int = 1            # ascent steps on a minibatch before moving to the next
    clean_anchors: bool | None = None   # add the clean images of another minibatch to each minibatch's estimate
                                        # as fixed points: the poisons are pushed to overlap *clean* rows of
                                        # other classes, a model of a release mixed with clean data
    refresh_every: int = 0              # passes between surrogate refreshes (0 = keep the fixed surrogate)
    surrogate_epochs: int = 4           # epochs of each refreshed surrogate (trained from scratch on x + delta)
    surrogate_augment: bool = True      # train each refreshed surrogate with crop+flip; False = on the plain
                                        # images, as the BEO code's retrain-every-step loop (§1.5)
    surrogate_arch: str = "convnet"
    surrogate_width: int | None = None

    def validate(self) -> None:
        super().validate()
        if self.step_size is None:
            self.step_size = self.epsilon / 10
        if not 0 < self.step_size <= self.epsilon:
            raise ProtectionError(f"step_size={self.step_size!r} must be in (0, epsilon].")
        check_sigma(self.sigma)
        for name in ("steps", "chunk_size", "feature_batch", "passes", "subset_size", "steps_per_batch",
                     "surrogate_epochs"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ProtectionError(f"{name}={v!r} must be a positive integer.")
        if self.augment_draws is not None and (not isinstance(self.augment_draws, int)
                                               or isinstance(self.augment_draws, bool) or self.augment_draws < 0):
            raise ProtectionError(f"augment_draws={self.augment_draws!r} must be a non-negative integer (or None).")
        for name in ("bf16", "surrogate_augment"):
            if not isinstance(getattr(self, name), bool):
                raise ProtectionError(f"{name}={getattr(self, name)!r} must be True or False.")
        if self.clean_anchors is not None and not isinstance(self.clean_anchors, bool):
            raise ProtectionError(f"clean_anchors={self.clean_anchors!r} must be True, False or None.")
        if not isinstance(self.refresh_every, int) or self.refresh_every < 0:
            raise ProtectionError(f"refresh_every={self.refresh_every!r} must be a non-negative integer.")
        if self.subset_size < 2:
            raise ProtectionError("subset_size must be at least 2.")
        if self.target not in TARGETS:
            raise ProtectionError(f"target={self.target!r} is not one of {sorted(TARGETS)}.")
        if self.targeted_weight is not None and not (isinstance(self.targeted_weight, (int, float))
                                                     and self.targeted_weight >= 0):
            raise ProtectionError(f"targeted_weight={self.targeted_weight!r} must be a number >= 0 (or None).")


TARGETS = ("next", "nearest")


# What craft() uses for an option left at None: the strongest setting measured on the mixing benchmark's validation
# split (benchmarks/results/mixing-val.md, README "Mixing"; with passes=20).
CRAFT_DEFAULTS = {"targeted_weight": 1.0, "augment_draws": 2, "clean_anchors": True}
# The per-batch form has no rows outside the batch to anchor to; its two other defaults were chosen on the same
# validation split (mixing-val-batch-augment.md: r = 1.0 32.35 % against 64.55 % for the plain §1.9 step, at a
# fifth of its speed)
BATCH_DEFAULTS = {"targeted_weight": 1.0, "augment_draws": 2, "clean_anchors": False}
