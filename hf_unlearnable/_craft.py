"""craft(): run a method's full dataset-level algorithm and return its Noise."""

from __future__ import annotations

from typing import Any

from ._data import load_labelled
from .methods import get_method
from .noise import Noise


def craft(dataset: Any, method: str, *, epsilon: float = 8 / 255, seed: int = 0, checkpoint_dir: str | None = None,
          image_column: str | None = None, label_column: str | None = None, id_column: str | None = None,
          **options: Any) -> Noise:
    """Craft noise over a whole `datasets.Dataset` with the method's dataset-level algorithm.

    E.g. `craft(ds, "em", mode="classwise")` runs EM's bi-level min-min. Progress is shown with tqdm; with
    `checkpoint_dir` the state is saved after every round and an interrupted run resumes where it stopped.
    Returns a `Noise` (class-wise by label, or sample-wise by row id) for `protect(noise=...)`.
    Started as several processes (`accelerate launch --multi_gpu --num_processes N`, or torchrun), "bayes" (each
    pass) and sample-wise "em" (each round's noise update) split their work across them, and every process returns
    the same Noise (save it from the main process only); at equal threads per process the bytes do not depend on
    the number of processes.
    """
    cls = get_method(method)
    cfg = cls.config_class.from_options(method, epsilon=epsilon, seed=seed, **options)
    cls.check_processes(cfg)      # before reading the data, before torch.distributed
    data = load_labelled(dataset, image_column=image_column, label_column=label_column, id_column=id_column,
                         need_label=cls.uses_labels, desc=f"Reading images for {method}",
                         check_ids=getattr(cfg, "mode", "samplewise") == "samplewise")   # ids key the noise
    return cls(cfg).craft(data, checkpoint_dir=checkpoint_dir)
