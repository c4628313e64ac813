"""Train a surrogate on your own labelled images: any number of classes, saved and shared like the bundled one.

    sur = train_surrogate(ds, epochs=12, test=test_ds)       # e.g. 37 pet breeds or 100 classes
    sur.save_pretrained("surrogates/pets")                    # or sur.push_to_hub("me/pets-surrogate")
    protected = ds.map(protect(method="em", surrogate="surrogates/pets"), batched=True, with_indices=True)

The per-batch methods (`protect(method="em" | "bayes")`) optimise against a fixed surrogate; the bundled one knows
CIFAR-10's 10 classes only. This is the same trainer (training.fit) and recipe as hub_scripts/train_surrogate.py,
which builds the bundled default with it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from .._data import check_same_task, load_labelled
from ..errors import ProtectionError
from ..training import TrainConfig, accuracy, fit, nchw
from . import Surrogate, SurrogateConfig
from .nets import ARCHITECTURES, check_size

from .._images import DEFAULT_RESOLUTION, check_seed, working_size

logger = logging.getLogger(__name__)

def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_arguments(arch: Any, width: Any, epochs: Any, seed: Any, adversarial_epsilon: Any) -> float:
    if not isinstance(arch, str) or arch not in ARCHITECTURES:
        raise ProtectionError(f"arch={arch!r} is not a surrogate architecture train_surrogate can build; pass one of "
                              f"{sorted(ARCHITECTURES)} (a transformers model is wrapped with "
                              "Surrogate.from_transformers instead).")
    check_size(width, 1)
    if not _is_int(epochs) or epochs < 1:
        raise ProtectionError(f"epochs={epochs!r} must be an int of at least 1 (passes over the data); the default "
                              "is 12.")
    check_seed(seed)
    if isinstance(adversarial_epsilon, (bool, np.bool_)):
        raise ProtectionError(f"adversarial_epsilon={adversarial_epsilon!r} is not a number; pass 0 (standard "
                              "training) or a radius in [0, 1] pixel units, e.g. 2/255.")
    try:
        adv = float(adversarial_epsilon)
    except (TypeError, ValueError):
        raise ProtectionError(f"adversarial_epsilon={adversarial_epsilon!r} is not a number; pass 0 (standard "
                              "training) or a radius in [0, 1] pixel units, e.g. 2/255.") from None
    if not np.isfinite(adv) or adv < 0:
        raise ProtectionError(f"adversarial_epsilon={adversarial_epsilon!r} must be 0 (standard training) or a "
                              "positive radius in [0, 1] pixel units, e.g. 2/255.")
    if adv >= 1:
        raise ProtectionError(f"adversarial_epsilon={adversarial_epsilon!r} is in 0-255 units, but it is in [0, 1] "
                              f"pixel units: did you mean {adv:g}/255?")
    return adv


def _read(dataset: Any, what: str, resolution: tuple[int, int], image_column: str | None,
          label_column: str | None):
    if hasattr(dataset, "keys") and not hasattr(dataset, "features"):     # a DatasetDict
        raise ProtectionError(f"{what} is a DatasetDict with splits {sorted(dataset.keys())}; pass one split, e.g. "
                              f"ds['train'].")
    return load_labelled(dataset, image_column=image_column, label_column=label_column, need_label=True,
                         resolution=resolution, desc=f"Reading {what}")


def _describe(data, what: str) -> str:
    src = data.source
    name = src.get("dataset") or "a datasets.Dataset"
    split = f" [{src['split']}]" if src.get("split") else ""
    return (f"{name}{split}: {len(data):,} {what} images, image column {src.get('image_column')!r}, label column "
            f"{src.get('label_column')!r}")


def train_surrogate(dataset: Any, *, arch: str = "convnet", width: int | None = None, epochs: int = 12,
                    resolution: int | tuple[int, int] | None = None, seed: int = 0, test: Any = None,
                    image_column: str | None = None, label_column: str | None = None,
                    adversarial_epsilon: float = 0.0, adversarial_steps: int = 1, progress: bool = True) -> Surrogate:
    """Train a surrogate classifier for the classes of `dataset` (a labelled `datasets.Dataset`, any number of
    classes) and return it, ready for `protect(method="em" | "bayes", surrogate=...)`, `save_pretrained` and
    `push_to_hub`.

    Images are resized to `resolution` (an int for square images or an (height, width) pair; default
    DEFAULT_RESOLUTION = 32), so data of mixed sizes works; noise crafted against the surrogate is then made at that
    size. `arch`: "convnet" (CPU-fast) or "resnet18"; `width`: its base width (None: the architecture's default).
    Training is the library's one trainer (training.fit: SGD with a one-cycle schedule, crop + flip) for `epochs`
    passes, seeded by `seed` (weights' initialisation included). `adversarial_epsilon` > 0 (pixel units, e.g.
    2/255) trains on L-inf adversarial examples of that radius (`adversarial_steps`: 1 = FGSM from a random start,
    n = PGD-n): a slightly robust surrogate. With `test=` (the same
    classes) its clean accuracy is measured and recorded. The config records the classes (ClassLabel names where
    the label column has them), the image size and a `training` record (data, rows, epochs, seed, accuracy,
    seconds and the TrainConfig); bad input is a ProtectionError naming the argument.
    """
    adv = _check_arguments(arch, width, epochs, seed, adversarial_epsilon)
    if not _is_int(adversarial_steps) or adversarial_steps < 1:
        raise ProtectionError(f"adversarial_steps={adversarial_steps!r} must be an int of at least 1 (1 = FGSM from a "
                              "random start, n = PGD-n).")
    height, width_px = working_size(resolution)
    size = (height, width_px)
    train = _read(dataset, "training data", size, image_column, label_column)
    present = np.unique(train.labels)
    if len(present) < 2 or train.num_classes < 2:
        raise ProtectionError(f"the label column {train.source.get('label_column')!r} holds "
                              f"{len(present)} class(es) ({present.tolist()}); a surrogate needs rows of at least 2 "
                              "classes. Pass label_column= the column with the classes, or data with more classes.")
    missing = sorted(set(range(train.num_classes)) - set(present.tolist()))
    if missing:
        names = [train.class_names[k] for k in missing] if train.class_names else missing
        logger.warning("train_surrogate: %d of %d classes have no training rows (%s); the surrogate will not learn "
                       "them.", len(missing), train.num_classes, names[:10])
    held_out = None
    if test is not None:
        held_out = _read(test, "test data", size, image_column, label_column)
        check_same_task(train, held_out)
    cfg = TrainConfig(epochs=int(epochs), adversarial_epsilon=adv, adversarial_steps=int(adversarial_steps))
    torch.manual_seed(int(seed))      # the initial weights, too, follow the seed
    sur = Surrogate(SurrogateConfig(arch=arch, width=None if width is None else int(width),
                                    num_classes=train.num_classes, class_names=train.class_names,
                                    image_size=[height, width_px]))
    logger.info("training a %s surrogate on %d images, %d classes, %dx%d, %d epochs", arch, len(train),
                train.num_classes, height, width_px, epochs)
    hist = fit(sur.model, nchw(train.images), torch.from_numpy(train.labels), cfg, seed=int(seed),
               desc="Training the surrogate", progress=progress)
    record: dict[str, Any] = {"data": _describe(train, "training"), "train_rows": len(train), "seed": int(seed),
                              "resolution": [height, width_px], "train_accuracy": round(hist["train_accuracy"], 4),
                              "seconds": round(hist["seconds"], 1), **cfg.to_dict()}
    if held_out is not None:
        acc = accuracy(sur.model, nchw(held_out.images), torch.from_numpy(held_out.labels))
        record.update(test_data=_describe(held_out, "test"), test_rows=len(held_out), test_accuracy=round(acc, 4))
        logger.info("surrogate: clean test accuracy %.4f", acc)
    sur.config.training = record
    sur.model.to("cpu", memory_format=torch.contiguous_format)     # as from_pretrained gives it: the same outputs
    sur.eval()
    return sur
