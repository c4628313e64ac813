"""Reading a datasets.Dataset into memory for crafting and evaluation, and finding its image / label / id columns."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ._images import decode_image, row_id, working_rgb
from ._progress import progress_bars
from .errors import ProtectionError

logger = logging.getLogger(__name__)

LABEL_NAMES = ("label", "labels", "fine_label", "class", "target")
ID_COLUMN = "id"


@dataclass
class LabelledImages:
    """A dataset decoded to memory: uint8 NxHxWx3 images (at the working resolution when one was asked for), int64
    labels, stable row ids (of the original pixels), provenance."""

    images: np.ndarray
    labels: np.ndarray | None
    ids: list[str]
    class_names: list[str] | None = None
    source: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_classes(self) -> int:
        if self.class_names:
            return len(self.class_names)
        return int(self.labels.max()) + 1 if self.labels is not None and len(self.labels) else 0

    def subset(self, index: Sequence[int] | np.ndarray) -> "LabelledImages":
        index = np.asarray(index, dtype=np.int64)
        return LabelledImages(self.images[index], None if self.labels is None else self.labels[index],
                              [self.ids[i] for i in index], self.class_names, dict(self.source))


def _is_image_feature(feature: Any) -> bool:
    return type(feature).__name__ == "Image"


def real_class_names(names: Sequence[str] | None) -> list[str] | None:
    """The class names, or None where there are none to compare: missing, or the indices "0", "1", ... that
    ClassLabel(num_classes=K) and unnamed noise carry."""
    names = list(names or [])
    return None if not names or names == [str(k) for k in range(len(names))] else names


def check_same_task(train: "LabelledImages", test: "LabelledImages") -> None:
    """A victim trained on `train` is scored on `test`: same image size, the same class names (where both have
    names), and no test label outside the training classes."""
    if test.images.shape[1:] != train.images.shape[1:]:
        raise ProtectionError(f"test images are {test.images.shape[1:]} but training images are "
                              f"{train.images.shape[1:]}; pass resolution= to train and test at one size.")
    a, b = real_class_names(train.class_names), real_class_names(test.class_names)
    if a and b and a != b:
        raise ProtectionError(f"the training and test data name their classes differently ({a} vs {b}); a victim "
                              "would be scored against other classes. Align the label columns (e.g. "
                              "test.align_labels_with_mapping(...)).")
    if int(test.labels.max()) >= train.num_classes:
        bad = int(np.flatnonzero(test.labels >= train.num_classes)[0])
        raise ProtectionError(f"test row {bad}: label {int(test.labels[bad])} is a class the training data does not "
                              f"have ({train.num_classes} classes); test on the same classes.")


def _label_column_help(candidates: list[str], cols: list[str], fix: str) -> str:
    if candidates:   # more than one
        return (f"several columns could hold the labels ({candidates} among {cols}); this method needs labels: "
                f"name one with {fix}.")
    return (f"no label column found among {cols} (looked for a ClassLabel column or one of {list(LABEL_NAMES)}); "
            f"this method needs labels: pass {fix}.")


def check_column_names(**columns: Any) -> None:
    """Column arguments (image_column=, label_column=, id_column=) are names or None (detect)."""
    for name, value in columns.items():
        if value is not None and (not isinstance(value, str) or not value):
            raise ProtectionError(f"{name}={value!r} must be a column name (a non-empty string), or None to detect "
                                  "it.")


def find_columns(features: Any, column_names: Sequence[str], image_column: str | None,
                 label_column: str | None, need_label: bool) -> tuple[str, str | None]:
    """Pick the image and label columns from a Dataset's features, or check the ones the user named."""
    cols = list(column_names)
    if image_column is not None:
        if image_column not in cols:
            raise ProtectionError(f"image_column={image_column!r} is not a column; the columns are {cols}.")
    else:
        images = [c for c in cols if features is not None and _is_image_feature(features.get(c))]
        if len(images) != 1:
            raise ProtectionError(
                f"cannot tell which column holds the images (found {images or 'none'} among {cols}); "
                "pass image_column='...'."
            )
        image_column = images[0]
    if label_column is not None:
        if label_column not in cols:
            raise ProtectionError(f"label_column={label_column!r} is not a column; the columns are {cols}.")
    elif need_label:
        label_column = label_column_among(features, cols, cols, "label_column='...'")
        if label_column is None:
            raise ProtectionError(_label_column_help([], cols, "label_column='...'"))
    return image_column, label_column


def label_column_among(features: Any, candidates: Sequence[str], cols: Sequence[str], fix: str) -> str | None:
    """The label column among `candidates`: the one ClassLabel column, else the one column named like a label
    (LABEL_NAMES); None when there is none; several are a ProtectionError (`cols` and `fix` go into its message)."""
    class_cols = [c for c in candidates if features is not None and type(features.get(c)).__name__ == "ClassLabel"]
    named = [c for c in candidates if c in LABEL_NAMES]
    pick = class_cols if len(class_cols) == 1 else named
    if len(pick) == 1:
        return pick[0]
    if len(class_cols) > 1 or len(pick) > 1:
        raise ProtectionError(_label_column_help(class_cols if len(class_cols) > 1 else pick, list(cols), fix))
    return None


def find_label_column(dataset: Any, image_column: str | None = None) -> str | None:
    """The label column a method would use, or None when the dataset has none (a ClassLabel column or one of
    LABEL_NAMES); several candidates are a ProtectionError asking to name one."""
    cols = [c for c in getattr(dataset, "column_names", []) if c != image_column]
    return label_column_among(getattr(dataset, "features", None), cols, cols, "label_column='...'")


BATCH_LABEL_FIX = "protect(..., label_column='...')"


def find_batch_columns(batch: dict, image_column: str | None, label_column: str | None,
                       need_label: bool) -> tuple[str, str | None]:
    """The same choice inside Dataset.map, where only the batch's values are visible."""
    cols = list(batch)
    # Inside Dataset.map the batch knows its features: read them rather than the values, so that finding the image
    # column does not make datasets decode (and maybe fail on) every image before we can name a bad row, and so
    # that a ClassLabel column is found as in find_columns (craft and protect(noise=) then agree on the labels).
    features = getattr(getattr(batch, "formatter", None), "features", None)
    if image_column is None:
        import PIL.Image

        def looks_like_image(values):
            v = values[0] if len(values) else None
            return isinstance(v, PIL.Image.Image) or (isinstance(v, dict) and "bytes" in v and "path" in v)

        images = [c for c in cols if features is not None and _is_image_feature(features.get(c))]
        if not images:
            images = [c for c in cols if looks_like_image(batch[c])]
        if len(images) != 1:
            raise ProtectionError(
                f"cannot tell which column holds the images (found {images or 'none'} among {cols}); "
                "pass protect(..., image_column='...')."
            )
        image_column = images[0]
    elif image_column not in batch:
        raise ProtectionError(f"image_column={image_column!r} is not a column; the columns are {cols}.")
    if label_column is None and need_label:
        label_column = label_column_among(features, cols, cols, BATCH_LABEL_FIX)
        if label_column is None:
            raise ProtectionError(_label_column_help([], cols, BATCH_LABEL_FIX))
    elif label_column is not None and label_column not in batch:
        raise ProtectionError(f"label_column={label_column!r} is not a column; the columns are {cols}.")
    return image_column, label_column


def check_labels(values: Sequence[Any], column: str, num_classes: int | None,
                 indices: Sequence[int] | None = None, offset: int = 0) -> np.ndarray:
    """Labels as int64, each in [0, num_classes), or a ProtectionError naming the row."""
    out = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        row = int(indices[i]) if indices is not None else offset + i
        where = f"column {column!r}, row {row}" + ("" if indices is not None or offset else " of this batch")
        if v is None or isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ProtectionError(f"{where}: label {v!r} is not an integer class index. Encode labels as ints "
                                  "(e.g. ds.class_encode_column(...)) or drop the row.")
        if v < 0:
            raise ProtectionError(f"{where}: label {v} is negative; class indices start at 0. Fix the label or drop "
                                  "the row.")
        if num_classes is not None and v >= num_classes:
            raise ProtectionError(
                f"{where}: label {v} is out of range [0, {num_classes}). Fix the label, or use a surrogate or noise "
                "made for these classes: train a surrogate with train_surrogate(ds) (command line: hf-unlearnable "
                "train-surrogate --data SRC --output DIR) and pass surrogate=DIR, map the classes onto class-wise "
                "noise with class_map=, or craft the noise on this dataset.")
        out[i] = v
    return out


def row_ids(batch: dict, images: Sequence[np.ndarray], id_column: str | None,
            indices: Sequence[int] | None = None, check: bool = False) -> list[str]:
    """Stable ids: the id column when present, else a content hash of the original pixels. With `check` (where the
    ids key or seed the noise), an id column's ids must be present and unique within the batch."""
    col = id_column if id_column is not None else (ID_COLUMN if ID_COLUMN in batch else None)
    if col is None:
        return [row_id(a) for a in images]
    if col not in batch:
        raise ProtectionError(f"id_column={col!r} is not a column; the columns are {list(batch)}.")
    ids = [str(v) for v in batch[col]]
    if check:
        for i, v in enumerate(batch[col]):
            if v is None or ids[i] == "":
                raise ProtectionError(f"column {col!r}, {row_in_batch(i, indices)}: the row id is {v!r}. {_IDS_HELP}")
        check_unique_ids(ids, col, indices)
    return ids


_IDS_HELP = ("Sample-wise noise is keyed, and per-batch noise seeded, by row id: give every row its own id, or pass "
             "id_column= another column (without an id column, ids are hashes of the pixels).")


def row_in_batch(i: int, indices: Sequence[int] | None) -> str:
    """How a message names position i of a batch: its dataset row when the map passes indices."""
    return f"row {int(indices[i])}" if indices is not None else f"row {i} of this batch"


def check_unique_ids(ids: Sequence[str], column: str, indices: Sequence[int] | None = None) -> None:
    """Ids from an id column must be unique where they key noise: one row would get another row's noise. (Pixel-hash
    ids repeat only for identical images, which may share noise.) `indices`: the dataset rows of the ids (None: a
    batch without indices)."""
    if len(set(ids)) == len(ids):
        return
    first: dict[str, int] = {}
    for i, v in enumerate(ids):
        if v in first:
            raise ProtectionError(f"column {column!r}: {row_in_batch(first[v], indices)} and "
                                  f"{row_in_batch(i, indices)} share the "
                                  f"id {v!r}. {_IDS_HELP}")
        first[v] = i


def load_labelled(dataset: Any, *, image_column: str | None = None, label_column: str | None = None,
                  id_column: str | None = None, need_label: bool = True, num_classes: int | None = None,
                  check_ids: bool = False, desc: str = "Reading images",
                  resolution: tuple[int, int] | None = None, defines_classes: bool = True) -> LabelledImages:
    """Decode a whole datasets.Dataset (validating every row) into a LabelledImages. `check_ids`: the ids will key
    sample-wise noise, so an id column's ids must be present and unique. `resolution` (h, w): every image as RGB at
    that size (gray replicated, alpha left out, resized where it differs), so memory is N x h x w x 3 whatever the
    images' own sizes; None: the images' own size, which must then be one size. `defines_classes`: plain integer
    labels here set the number of classes (training data), so they are checked to be a plausible class count."""
    from tqdm.auto import tqdm

    if not hasattr(dataset, "features") or not hasattr(dataset, "column_names"):
        raise ProtectionError(f"expected a datasets.Dataset, got {type(dataset).__name__}.")
    check_column_names(image_column=image_column, label_column=label_column, id_column=id_column)
    if len(dataset) == 0:
        raise ProtectionError("the dataset is empty (0 rows): nothing to protect or evaluate.")
    features = dataset.features
    image_column, label_column = find_columns(features, dataset.column_names, image_column, label_column,
                                              need_label)
    class_names = None
    if label_column is not None:
        feat = features.get(label_column)
        if type(feat).__name__ == "ClassLabel":
            class_names = list(feat.names)
            num_classes = num_classes or len(class_names)
            check_class_count(len(class_names), len(dataset), label_column, named=True)
    # Read raw bytes and decode ourselves, so a corrupt cell is reported with its row number.
    raw = dataset
    if _is_image_feature(features.get(image_column)) and features[image_column].decode:
        import datasets

        raw = dataset.cast_column(image_column, datasets.Image(decode=False))
    if id_column is not None and id_column not in dataset.column_names:
        raise ProtectionError(f"id_column={id_column!r} is not a column; the columns are {dataset.column_names}.")
    id_col = id_column or (ID_COLUMN if ID_COLUMN in dataset.column_names else None)
    keep = [c for c in (image_column, label_column, id_col) if c]
    raw = raw.select_columns(keep)
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    ids: list[str] = []
    sizes: set = set()
    n = len(raw)
    step = 128      # rows of encoded bytes read at a time (photos: a few MB each)
    for start in tqdm(range(0, n, step), desc=desc, unit="batch", disable=n <= 8 * step or not progress_bars(),
                      leave=False):
        batch = raw[start:start + step]
        idx = list(range(start, min(start + step, n)))
        hashes = []
        for i, v in enumerate(batch[image_column]):   # one full-size image at a time: memory stays at the working size
            a = decode_image(v, image_column, i, idx)
            if id_col is None:
                hashes.append(row_id(a))              # ids of the original pixels
            sizes.add(a.shape[:2])
            images.append(working_rgb(a, resolution))
        if label_column is not None:
            labels.append(check_labels(batch[label_column], label_column, num_classes, idx))
        ids.extend(hashes if id_col is None else row_ids(batch, [], id_column, idx, check=check_ids))
    if check_ids and id_col is not None:
        check_unique_ids(ids, id_col, range(len(ids)))    # across chunks (row_ids checked each chunk)
    shapes = {a.shape for a in images}
    if len(shapes) > 1:    # only without a resolution
        raise ProtectionError(
            f"column {image_column!r}: images come in {len(shapes)} sizes ({sorted(shapes)[:3]}...); pass "
            "resolution= (e.g. 32) to craft and train at one working size (the released images keep their own).")
    info = getattr(dataset, "info", None)
    source = {"dataset": getattr(info, "dataset_name", None) or getattr(info, "builder_name", None),
              "config": getattr(info, "config_name", None),
              "split": str(getattr(dataset, "split", None)) if getattr(dataset, "split", None) else None,
              "fingerprint": getattr(dataset, "_fingerprint", None),
              "image_column": image_column, "label_column": label_column,
              "image_sizes": {"min": [min(int(h) for h, _ in sizes), min(int(w) for _, w in sizes)],
                              "max": [max(int(h) for h, _ in sizes), max(int(w) for _, w in sizes)],
                              "distinct": len(sizes)}}
    if resolution is not None:
        source["resolution"] = [int(v) for v in resolution]
    labels = np.concatenate(labels) if labels else None
    if labels is not None and class_names is None and num_classes is None and defines_classes:   # classes 0..max
        check_class_count(int(labels.max()) + 1, n, label_column, named=False)
    return LabelledImages(np.stack(images), labels, ids, class_names, source)


def check_class_count(k: int, rows: int, column: str, *, named: bool) -> None:
    """Refuse a class count that nothing could learn from, before a surrogate, a noise bank or a one-hot matrix is
    sized by it: more than nets.MAX_CLASSES, or (classes inferred from plain integer labels) more than the rows."""
    from .surrogates.nets import MAX_CLASSES

    if k <= MAX_CLASSES and (named or k <= rows):    # a ClassLabel declares its classes: a subset may lack some
        return
    what = (f"its ClassLabel has {k:,} classes" if named
            else f"its largest label is {k - 1:,}, so the classes would be 0..{k - 1:,}")
    raise ProtectionError(f"column {column!r}: {what}, for {rows:,} rows (at most {MAX_CLASSES:,} classes, and no "
                          "more than the rows). Labels must be class indices 0..K-1: re-encode them with "
                          f"ds.class_encode_column({column!r}), or pass label_column= the column that holds the "
                          "classes.")
