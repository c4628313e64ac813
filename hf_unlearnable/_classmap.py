"""Which classes a protected row gets: the batch's label column (or none: label-agnostic), and a user's explicit
mapping of their classes onto a class-wise noise bank's (`protect(noise=bank, class_map=...)`)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ._data import BATCH_LABEL_FIX, LABEL_NAMES, label_column_among, row_in_batch
from .errors import ProtectionError
from .noise import Noise

logger = logging.getLogger(__name__)


def batch_label_column(batch, image_column: str) -> str | None:
    """The batch's label column, or None when it has none (several candidates: a ProtectionError)."""
    features = getattr(getattr(batch, "formatter", None), "features", None)
    cols = [c for c in batch if c != image_column]
    column = label_column_among(features, cols, list(batch), BATCH_LABEL_FIX)
    if column is None:
        logger.warning("no label column among %s (looked for a ClassLabel column or one of %s): protecting with "
                       "pseudo-classes; pass label_column= if one of them holds the labels", cols, list(LABEL_NAMES))
    return column


def check_class_map(class_map: Any, noise: Noise | None) -> Any:
    if class_map is None:
        return None
    if noise is None or noise.kind != "classwise" or noise.centroids is not None:
        raise ProtectionError("class_map= maps a dataset's classes onto class-wise noise by label: pass it with "
                              "noise=<class-wise Noise>.")
    if isinstance(class_map, str):
        if class_map != "index":
            raise ProtectionError(f"class_map={class_map!r}: pass 'index' (your class k gets pattern k) or a dict "
                                  "{your class: noise class}.")
        return class_map
    if not isinstance(class_map, dict) or not class_map:
        raise ProtectionError(f"class_map={class_map!r}: pass 'index' or a non-empty dict {{your class: noise class}}.")
    names = noise.config.class_names or []
    out = {}
    for key, value in class_map.items():
        if isinstance(value, str):
            if value not in names:
                raise ProtectionError(f"class_map[{key!r}] = {value!r} is not a class of this noise ({names}).")
            value = names.index(value)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < len(noise):
            raise ProtectionError(f"class_map[{key!r}] = {value!r} must be a class of this noise: a name of "
                                  f"{names} or an index below {len(noise)}.")
        if isinstance(key, bool) or not isinstance(key, (str, int, np.integer)):
            raise ProtectionError(f"class_map key {key!r} must be a class name or label index of your dataset.")
        out[key if isinstance(key, str) else int(key)] = int(value)
    return out


def map_labels(class_map, labels: np.ndarray, noise: Noise, batch, label_column: str, indices) -> np.ndarray:
    """The noise class of each row's label under the user's explicit class_map."""
    if class_map == "index":
        bad = np.flatnonzero(labels >= len(noise))
        if len(bad):
            raise ProtectionError(f"column {label_column!r}, {row_in_batch(int(bad[0]), indices)}: label "
                                  f"{int(labels[bad[0]])} has no pattern: this noise has {len(noise)} classes, so "
                                  f"class_map='index' covers labels 0-{len(noise) - 1}. Map your classes with a dict, "
                                  "or use a bank with more classes.")
        return labels
    features = getattr(getattr(batch, "formatter", None), "features", None)
    names = getattr(features.get(label_column), "names", None) if features is not None else None
    if names is None and any(isinstance(key, str) for key in class_map):
        raise ProtectionError(f"class_map names classes, but the batch does not carry column {label_column!r}'s class "
                              "names (not a ClassLabel, or IterableDataset.map, whose batches have no features): key "
                              "class_map by label index instead, e.g. {0: 'airplane'}.")
    out = np.empty_like(labels)
    for i, y in enumerate(labels):
        y = int(y)
        name = names[y] if names is not None and y < len(names) else None
        if name is not None and name in class_map:
            out[i] = class_map[name]
        elif y in class_map:
            out[i] = class_map[y]
        else:
            raise ProtectionError(f"column {label_column!r}, {row_in_batch(i, indices)}: class {name or y!r} is not "
                                  "in class_map; map every class of the dataset (its name or its label index) onto a "
                                  "noise class.")
    return out
