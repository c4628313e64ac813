"""One loader for every place data comes from: the bundled slice, any Hub dataset, an image folder, Parquet files in
any layout `datasets` reads, and `save_to_disk` folders. The command line's `--data` and Python share it.

Image folders and other sources whose image cells name their file get a `file_name` column (the path relative to
the folder, or the file's own name), so the name survives protection and export (`write_dataset`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ProtectionError

SOURCES_HELP = ('"bundled" (the 2,000 train / 932 test CIFAR-10 slice shipped in the package, offline), a Hub dataset '
                'id ("user/name", "cifar10"; "hub" is cifar10), a folder of images (class subfolders, or a metadata '
                "file, as datasets' imagefolder reads them; also written imagefolder:DIR), Parquet files or a folder "
                "of them (e.g. the Hub's data/train-00000-of-00001.parquet; also parquet:PATH), or a folder written "
                "by Dataset.save_to_disk / DatasetDict.save_to_disk")
FILE_NAME = "file_name"


def load_source(source: str, split: str = "train", *, config: str | None = None, revision: str | None = None,
                token: str | bool | None = None):
    """A `datasets.Dataset` from `source` (see SOURCES_HELP) at `split`; every failure is a ProtectionError that
    names what was tried and how to fix it."""
    from . import load_cifar10

    source = str(source)
    kind, _, rest = source.partition(":")
    if kind in _PREFIXES and rest:
        return _with_file_names(_load_files(kind, Path(os.path.expanduser(rest)), split, source), rest)
    if source == "bundled":
        return load_cifar10(split, source)
    path = Path(os.path.expanduser(source))
    if path.exists():
        if revision is not None or config is not None:
            raise ProtectionError(f"--config/--revision (config=/revision=) apply to Hub datasets, but {source!r} is "
                                  "a local path; drop them.")
        return _with_file_names(_load_local(path, split, source), path)
    repo_id = hub_dataset_id(source)
    if repo_id is None:
        raise ProtectionError(f"data source {source!r} does not exist (a local path: check it); pass {SOURCES_HELP}.")
    return _load_hub(repo_id, split, config, revision, token)


_PREFIXES = ("imagefolder", "parquet")


def hub_dataset_id(source: str) -> str | None:
    """The Hub dataset `source` names ("hub" is cifar10), or None for the bundled slice, a builder prefix or a local
    path (existing or written as one): the rule load_source follows."""
    source = str(source)
    kind, _, rest = source.partition(":")
    if (kind in _PREFIXES and rest) or source == "bundled" or Path(os.path.expanduser(source)).exists() \
            or source.startswith(("/", ".", "~")) or source.count("/") > 1:
        return None
    return "cifar10" if source == "hub" else source


def _load_local(path: Path, split: str, source: str):
    import datasets

    if path.is_file():
        if path.suffix != ".parquet":
            raise ProtectionError(f"data source {source!r} is a file but not Parquet; pass a folder or a .parquet "
                                  "file.")
        return _load_files("parquet", path, split, source)
    if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as exc:  # datasets raises several types for a damaged folder
            raise ProtectionError(f"cannot read {source!r} with datasets.load_from_disk ({type(exc).__name__}: "
                                  f"{exc}).") from None
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise ProtectionError(f"{source!r} is a DatasetDict without a {split!r} split; its splits are "
                                      f"{sorted(ds)} (pass --split / split=).")
            ds = ds[split]
        return ds
    if (path / f"{split}.parquet").exists():      # the project's own train.parquet / test.parquet folders
        return _load_files("parquet", path / f"{split}.parquet", split, source)
    if any(path.rglob("*.parquet")):
        return _load_files("parquet", path, split, source)
    return _load_files("imagefolder", path, split, source)


def _load_files(builder: str, path: Path, split: str, source: str):
    """datasets' packaged `parquet` or `imagefolder` builder on a file or folder; a single-split folder answers any
    split name with its one split (an image folder without split subfolders is all "train")."""
    import datasets

    if not path.exists():
        raise ProtectionError(f"data source {source!r}: {str(path)!r} does not exist.")
    try:
        if builder == "parquet" and path.is_file():
            return datasets.load_dataset("parquet", data_files={split: str(path)}, split=split)
        found = datasets.load_dataset(builder, data_dir=str(path))
    except Exception as exc:  # datasets raises many types for folders it cannot read
        raise ProtectionError(f"data source {source!r}: datasets' {builder} builder cannot read {str(path)!r} "
                              f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]}). Pass {SOURCES_HELP}.") \
            from None
    if split in found:
        return found[split]
    if len(found) == 1:
        return next(iter(found.values()))
    raise ProtectionError(f"data source {source!r} has no split {split!r}; its splits are {sorted(found)} (pass "
                          "--split / split=).")


def _load_hub(repo_id: str, split: str, config: str | None, revision: str | None, token):
    import datasets
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise ProtectionError(f"data source {repo_id!r} is not a local file or folder, and not a Hub dataset id "
                              f"('user/name'); pass {SOURCES_HELP}.") from None
    try:
        return datasets.load_dataset(repo_id, config, split=split, revision=revision, token=token)
    except ValueError as exc:       # an unknown split or config: datasets lists what exists
        raise ProtectionError(f"Hub dataset {repo_id!r}: {' '.join(str(exc).split())[:400]} (pass --split / "
                              "--config).") from None
    except Exception as exc:        # not found, private, offline: all mean "check the id, the token or the network"
        raise ProtectionError(f"data source {repo_id!r} is not a local file or folder, and the Hub dataset "
                              f"{repo_id!r} cannot be loaded ({type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:300]}). Check the id, --revision, the token for a "
                              "private dataset, or the network.") from None


def _with_file_names(ds: Any, root: str | Path):
    """Add `file_name` (the image's path relative to `root`, else its base name) when the image cells name files
    and the dataset has no such column; otherwise return `ds` unchanged."""
    import datasets

    images = [c for c, f in ds.features.items() if isinstance(f, datasets.Image)]
    if len(images) != 1 or FILE_NAME in ds.column_names or len(ds) == 0:
        return ds
    column = images[0]
    root = Path(os.path.expanduser(str(root))).resolve()
    names = []
    for path in _image_paths(ds, column):
        if not path:
            return ds       # some cells carry bytes only: there is no name to keep
        names.append(_relative(Path(path), root))
    return ds.add_column(FILE_NAME, names)


def _image_paths(ds: Any, column: str):
    """The `path` of every image cell, in row order, without reading the image bytes into memory at once."""
    if getattr(ds, "_indices", None) is None:      # straight from the (memory-mapped) table: the paths only
        for chunk in ds.data.column(column).chunks:
            yield from chunk.field("path").to_pylist()
        return
    table = ds.with_format("arrow")
    for start in range(0, len(ds), 256):
        yield from table[start:start + 256].column(column).combine_chunks().field("path").to_pylist()


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return path.name
