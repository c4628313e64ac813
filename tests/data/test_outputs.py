"""write_dataset: Arrow, Parquet in the Hub's layout, and an image folder that datasets reads back with the same
names, sizes and labels, every file within epsilon of its source."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest

datasets = pytest.importorskip("datasets")

from hf_unlearnable import ProtectionError, protect  # noqa: E402
from hf_unlearnable.data import load_source, write_dataset  # noqa: E402
from tests.data.test_sources import make_photo_folder  # noqa: E402


@pytest.fixture
def protected(tmp_path):
    source = make_photo_folder(tmp_path / "photos")
    return source, load_source(str(source)).map(protect(method="random"), batched=True)


def test_image_folder_round_trip(tmp_path, protected):
    source, ds = protected
    out = tmp_path / "out"
    write_dataset({"train": ds}, out, "imagefolder")
    back = datasets.load_dataset("imagefolder", data_dir=str(out), split="train")
    assert back.features["label"].names == ["cat", "dog"] and back.num_rows == 6
    for src in sorted(source.rglob("*.*")):
        written = out / src.parent.name / f"{src.stem}.png"
        a = np.asarray(PIL.Image.open(src).convert("RGB")).astype(int)
        b = np.asarray(PIL.Image.open(written)).astype(int)
        assert a.shape == b.shape and 0 < np.abs(a - b).max() <= 8


def test_parquet_and_arrow(tmp_path, protected):
    _, ds = protected
    write_dataset({"train": ds, "test": ds.select(range(2))}, tmp_path / "pq", "parquet")
    assert sorted(p.name for p in (tmp_path / "pq" / "data").iterdir()) == [
        "test-00000-of-00001.parquet", "train-00000-of-00001.parquet"]
    back = load_source(str(tmp_path / "pq"), "train")
    assert back["file_name"] == ds["file_name"] and back.features == ds.features
    write_dataset({"train": ds}, tmp_path / "arrow", "arrow")
    assert datasets.load_from_disk(str(tmp_path / "arrow"))["file_name"] == ds["file_name"]


def test_several_splits_get_a_split_level_and_other_columns_a_metadata_file(tmp_path, protected):
    _, ds = protected
    ds = ds.add_column("caption", [f"photo {i}" for i in range(ds.num_rows)])
    write_dataset({"train": ds, "test": ds.select(range(2))}, tmp_path / "out", "imagefolder")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["test", "train"]
    back = datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "out"))
    assert back["train"]["caption"] == ds["caption"] and back["train"]["label"] == ds["label"]
    assert back["test"].num_rows == 2


def test_name_collisions_and_unusable_class_names_are_refused(tmp_path, protected):
    _, ds = protected
    same = ds.map(lambda b: {"file_name": ["cat/x.jpg"] * len(b["file_name"])}, batched=True)
    with pytest.raises(ProtectionError, match="would both be written as 'cat/x.png'"):
        write_dataset({"train": same}, tmp_path / "a", "imagefolder")
    renamed = ds.cast_column("label", datasets.ClassLabel(names=["a/b", "dog"]))
    with pytest.raises(ProtectionError, match="cannot be folder names"):
        write_dataset({"train": renamed}, tmp_path / "b", "imagefolder")
