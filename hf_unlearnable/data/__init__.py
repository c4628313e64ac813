"""CIFAR-10 loaders: the slice bundled with the package (offline), a local Parquet folder, or the Hub."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ProtectionError

SLICE_DIR = Path(__file__).parent / "cifar10_slice"
SPLITS = ("train", "test")


def per_class_rows(labels, start: int, stop: int):
    """Sorted row indices: the start..stop-1-th rows of every class, in dataset order (class-balanced subsets and
    disjoint per-class slices for training, validation and surrogates)."""
    import numpy as np

    labels = np.asarray(labels)
    return np.sort(np.concatenate([np.flatnonzero(labels == k)[start:stop] for k in np.unique(labels)]))


def load_cifar10(split: str = "train", source: str = "bundled"):
    """Load a CIFAR-10 split as a datasets.Dataset (`img`: Image, `label`: ClassLabel).

    source: "bundled" (2,000 train / 932 test pixel-exact images shipped in the package, works offline),
    "hub" (the Hub's `cifar10`, needs internet), or a folder holding train.parquet / test.parquet.
    """
    import datasets

    if split not in SPLITS:
        raise ProtectionError(f"split={split!r} must be one of {SPLITS}.")
    if source == "bundled":
        folder = SLICE_DIR
    elif source == "hub":
        return datasets.load_dataset("cifar10", split=split)
    else:
        folder = Path(os.path.expanduser(source))
    path = folder / f"{split}.parquet"
    if not path.exists():
        raise ProtectionError(f"{str(path)!r} does not exist: pass source='bundled', 'hub', or a folder with "
                              "train.parquet and test.parquet.")
    return datasets.load_dataset("parquet", data_files={split: str(path)}, split=split)


from ._outputs import FORMATS, write_dataset  # noqa: E402  (they use load_cifar10's module lazily)
from ._sources import FILE_NAME, SOURCES_HELP, hub_dataset_id, load_source  # noqa: E402

__all__ = ["FILE_NAME", "FORMATS", "SOURCES_HELP", "hub_dataset_id", "load_cifar10", "load_source", "per_class_rows", "write_dataset"]
