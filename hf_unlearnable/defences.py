"""Defences a victim may apply to its inputs: a protection is only as good as its accuracy under them.

Each defence is a deterministic preprocessing of uint8 NxHxWx3 images that the victim applies to everything it
sees, training and test inputs alike (a defender controls their whole pipeline). Crop + flip augmentation is part
of the victim's training, not listed here.

"adversarial" is a training-time defence: the inputs stay as they are and the victim trains on L_inf adversarial
examples of its own (TRAINING_OPTIONS: fast adversarial training at 8/255, FGSM from a random start; Wong et al.
2020), which erases error-minimising shortcuts that live within that radius (REM, methods.md §4.7).

"cutout", "cutmix", "mixup", "ueraser" and "ueraser-lite" are training-time too (TRAINING_OPTIONS sets the victim's
TrainConfig.batch_defence): each training batch is augmented on the fly (_augment.py; APBench's CutOut, kornia's
CutMix / MixUp with the mixed-label loss, UEraser's max loss over 5 augmented copies or 1 for Lite); test images
are never augmented.
"""

from __future__ import annotations

import io

import numpy as np
import PIL.Image

from .errors import ProtectionError

JPEG_QUALITY = 10  # ISS (Liu et al. 2023) and APBench


def no_defence(images: np.ndarray) -> np.ndarray:
    return images


def grayscale(images: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma, as PIL's "L" conversion, repeated on three channels (ISS grayscale)."""
    luma = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    gray = np.clip(np.rint(luma), 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)


def jpeg(images: np.ndarray, quality: int = JPEG_QUALITY) -> np.ndarray:
    """Re-encode every image as JPEG at a low quality (ISS: quality 10 removes most shortcut noise)."""
    out = np.empty_like(images)
    for i, img in enumerate(images):
        buf = io.BytesIO()
        PIL.Image.fromarray(img).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        out[i] = np.asarray(PIL.Image.open(buf).convert("RGB"))
    return out


BATCH_DEFENCES = ("cutout", "cutmix", "mixup", "ueraser", "ueraser-lite")   # _augment.BATCH_DEFENCES
DEFENCES = {"none": no_defence, "grayscale": grayscale, "jpeg": jpeg, "adversarial": no_defence,
            **{name: no_defence for name in BATCH_DEFENCES}}
# defences that change how the victim trains: TrainConfig fields set for that defence's victims. Each switches the
# others off (TrainConfig refuses adversarial training combined with a batch defence).
TRAINING_OPTIONS = {"adversarial": {"adversarial_epsilon": 8 / 255, "adversarial_steps": 1, "batch_defence": "none"},
                    **{name: {"batch_defence": name, "adversarial_epsilon": 0.0} for name in BATCH_DEFENCES}}


def get_defence(name: str):
    if not isinstance(name, str) or name not in DEFENCES:
        raise ProtectionError(f"unknown defence {name!r}; available: {sorted(DEFENCES)}.")
    return DEFENCES[name]
