"""craft(): run a method's full dataset-level algorithm and return its Noise."""

from __future__ import annotations

import logging
from typing import Any

from ._data import LABEL_NAMES, find_label_column, load_labelled
from ._images import check_resolution
from .errors import ProtectionError
from .methods import get_method
from .noise import Noise

logger = logging.getLogger(__name__)


def craft(dataset: Any, method: str, *, epsilon: float | None = None, seed: int = 0,
          checkpoint_dir: str | None = None, image_column: str | None = None, label_column: str | None = None,
          id_column: str | None = None,
          resolution: int | tuple[int, int] | None = None, clusters: int | None = None, **options: Any) -> Noise:
    """Craft noise over a whole `datasets.Dataset` with the method's dataset-level algorithm.

    E.g. `craft(ds, "em", mode="classwise")` runs EM's bi-level min-min. Progress is shown with tqdm; with
    `checkpoint_dir` the state is saved after every round and an interrupted run resumes where it stopped.
    Returns a `Noise` (class-wise by label, or sample-wise by row id) for `protect(noise=...)`. `epsilon`: the
    L-inf budget (default: the method's, 8/255). Methods with an L2 or L0 budget (ar, lsp) need no crafting: their
    noise is drawn per batch, `ds.map(protect(method=...), batched=True)`.

    Images of any size and mode (RGB, RGBA, L, LA) are crafted at one working `resolution` (an int side or (h, w);
    default: the method's surrogate's input size, 32 for the bundled one), recorded in the noise; `protect` brings
    the noise to each image's own size within epsilon. A dataset without a label column gets pseudo-classes for
    the methods that need classes: `clusters` (default 10) k-means clusters of the bundled surrogate's features,
    recorded in the noise (class-wise noise then carries the centroids and needs no labels when applied).

    Started as several processes (`accelerate launch --multi_gpu --num_processes N`, or torchrun), "bayes" (each
    pass) and sample-wise "em" (each round's noise update) split their work across them, and every process returns
    the same Noise (save it from the main process only); at equal threads per process the bytes do not depend on
    the number of processes.
    """
    from ._clusters import DEFAULT_CLUSTERS, check_clusters, pseudo_label

    cls = get_method(method)
    if cls.norm != "linf":
        raise ProtectionError(f"{method!r} needs no crafting (no network, no pass over the data): its noise, an "
                              f"{cls.norm.upper()} budget, is drawn per batch from each row and its class. Protect "
                              f"with ds.map(protect(method={method!r}), batched=True).")
    cfg = cls.config_class.from_options(method, seed=seed, **({} if epsilon is None else {"epsilon": epsilon}),
                                        **options)
    cls.check_craft(cfg)
    size = check_resolution(resolution) or cls(cfg).working_resolution()
    cls.check_processes(cfg)      # before reading the data, before torch.distributed
    if checkpoint_dir is not None:    # before the work: not after the first round, when it first writes there
        from ._atomic import check_writable

        check_writable(checkpoint_dir, "checkpoint_dir")
    agnostic = False
    if cls.uses_labels and label_column is None:
        agnostic = find_label_column(dataset, image_column) is None
    if clusters is not None:
        check_clusters(clusters)
        if not cls.uses_labels:
            raise ProtectionError(f"clusters= gives pseudo-classes to methods that need classes; {method!r} uses no "
                                  "labels. Drop clusters=.")
        if not agnostic:
            raise ProtectionError("clusters= applies to data without labels, but this dataset has a label column; "
                                  "remove it (ds.remove_columns(...)) to craft label-agnostic noise, or drop "
                                  "clusters= to craft by label.")
    data = load_labelled(dataset, image_column=image_column, label_column=label_column, id_column=id_column,
                         need_label=cls.uses_labels and not agnostic, desc=f"Reading images for {method}",
                         check_ids=getattr(cfg, "mode", "samplewise") == "samplewise",   # ids key the noise
                         resolution=size)
    if not agnostic:
        return cls(cfg).craft(data, checkpoint_dir=checkpoint_dir)
    logger.warning("no label column among %s (looked for a ClassLabel column or one of %s): crafting against %d "
                   "pseudo-classes (clusters of the surrogate's features); pass label_column= if one of them holds "
                   "the labels", dataset.column_names, list(LABEL_NAMES), clusters or DEFAULT_CLUSTERS)
    data, record, centroids = pseudo_label(data, clusters or DEFAULT_CLUSTERS, cfg.seed)
    noise = cls(cfg).craft(data, checkpoint_dir=checkpoint_dir)
    if noise.kind == "classwise":     # applied by nearest centroid, so the noise carries them
        noise.config.clustering, noise.centroids = record, centroids
    else:       # sample-wise noise is keyed by id: the clusters only shaped the craft
        noise.config.stats["clustering"] = record
    return noise
