"""Writing a (protected) dataset back out: as `save_to_disk` Arrow, as Parquet in the Hub's layout, or as an image
folder of PNG files that `load_dataset("imagefolder", data_dir=...)` reads back with the same rows and labels.

The caller hands over an empty temporary folder and renames it into place when this returns (`_atomic.atomic_dir`).
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

from ..errors import ProtectionError
from ._sources import FILE_NAME

FORMATS = ("arrow", "parquet", "imagefolder")
_BAD_NAME = re.compile(r"[/\\\x00]|^\.{0,2}$")


def write_dataset(splits: dict[str, Any], folder: Path, fmt: str, *, num_proc: int | None = None) -> None:
    """Write {split name: Dataset} into `folder` in format `fmt` (one of FORMATS)."""
    import datasets

    if fmt not in FORMATS:
        raise ProtectionError(f"format {fmt!r} is not one of {FORMATS}.")
    folder = Path(folder)
    if fmt == "arrow":
        if len(splits) == 1:
            next(iter(splits.values())).save_to_disk(str(folder), num_proc=num_proc)
        else:
            datasets.DatasetDict(splits).save_to_disk(str(folder), num_proc=num_proc)
    elif fmt == "parquet":
        (folder / "data").mkdir(parents=True, exist_ok=True)
        for name, ds in splits.items():
            ds.to_parquet(str(folder / "data" / f"{name}-00000-of-00001.parquet"))
    else:
        for name, ds in splits.items():
            _write_imagefolder(ds, folder if len(splits) == 1 else folder / name)


def _image_and_label(ds: Any) -> tuple[str, str | None, list[str] | None]:
    import datasets

    images = [c for c, f in ds.features.items() if isinstance(f, datasets.Image)]
    if len(images) != 1:
        raise ProtectionError(f"--format imagefolder writes one image column, but the dataset has {len(images)} "
                              f"({images}); use --format arrow or parquet.")
    labels = [c for c, f in ds.features.items() if isinstance(f, datasets.ClassLabel)]
    if not labels:
        return images[0], None, None
    names = list(ds.features[labels[0]].names)
    bad = [n for n in names if _BAD_NAME.search(n)]
    if bad:
        raise ProtectionError(f"--format imagefolder names a folder after each class, but class name(s) {bad[:3]} "
                              "cannot be folder names (a slash, a NUL, '.' or '..'); rename the classes or use "
                              "--format arrow or parquet.")
    return images[0], labels[0], names


def _write_imagefolder(ds: Any, folder: Path) -> None:
    """<folder>/<class name>/<source stem>.png per row; the other columns (if any) in metadata.jsonl."""
    import datasets

    image, label, names = _image_and_label(ds)
    extra = [c for c in ds.column_names if c not in (image, label, FILE_NAME)]
    raw = ds.cast_column(image, datasets.Image(decode=False))
    written: dict[str, int] = {}
    metadata = []
    folder.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(ds), 64):
        batch = raw[start:start + 64]
        for i, cell in enumerate(batch[image]):
            row = start + i
            stem = Path(batch[FILE_NAME][i]).stem if FILE_NAME in batch and batch[FILE_NAME][i] else f"{row:06d}"
            relative = f"{stem}.png" if label is None else f"{names[batch[label][i]]}/{stem}.png"
            if relative in written:
                raise ProtectionError(f"--format imagefolder: rows {written[relative]} and {row} would both be "
                                      f"written as {relative!r} (source files with the same name and class); rename "
                                      "one, or use --format arrow or parquet.")
            written[relative] = row
            target = folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(_png_bytes(cell, row))
            if extra:
                record = {"file_name": relative, **{c: batch[c][i] for c in extra}}
                if label is not None:
                    record[label] = batch[label][i]
                metadata.append(record)
    if metadata:       # datasets then reads every column from it (the label too, as an integer)
        try:
            text = "\n".join(json.dumps(r, ensure_ascii=False) for r in metadata)
        except TypeError as exc:
            raise ProtectionError(f"--format imagefolder writes the other columns {extra} to metadata.jsonl, but "
                                  f"one holds values JSON cannot store ({exc}); use --format arrow or parquet.") \
                from None
        (folder / "metadata.jsonl").write_text(text + "\n")


def _png_bytes(cell: dict, row: int) -> bytes:
    """The cell's PNG bytes as they are (protected images are PNG already); anything else re-saved as PNG, which
    keeps every pixel."""
    import PIL.Image

    data = cell.get("bytes")
    if data is None and cell.get("path"):
        data = Path(cell["path"]).read_bytes()
    if data is None:
        raise ProtectionError(f"row {row}: the image cell holds no bytes and no path.")
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data
    buf = io.BytesIO()
    with PIL.Image.open(io.BytesIO(data)) as img:
        img.save(buf, format="PNG")
    return buf.getvalue()
