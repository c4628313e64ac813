"""Every data source `load_source` resolves (and the command line's --data with it): bundled, Hub ids (the loopback
server), image folders, Parquet in any layout datasets reads, save_to_disk folders; file names are kept."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest

datasets = pytest.importorskip("datasets")

from hf_unlearnable import ProtectionError  # noqa: E402
from hf_unlearnable.data import load_source  # noqa: E402


def make_photo_folder(root, classes=("cat", "dog"), per_class=3, seed=0):
    """Class subfolders of JPEGs of mixed sizes (and one PNG), as a phone or a scraper leaves them."""
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            h, w = (int(v) for v in rng.integers(20, 70, 2))
            img = PIL.Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            if i == per_class - 1:
                img.save(root / c / f"{c}-{i}.png")
            else:
                img.save(root / c / f"{c}-{i}.jpg", quality=90)
    return root


def test_image_folder_with_class_subfolders(tmp_path):
    folder = make_photo_folder(tmp_path / "photos")
    for spec in (str(folder), f"imagefolder:{folder}"):
        ds = load_source(spec, "train")
        assert ds.features["label"].names == ["cat", "dog"] and ds.num_rows == 6
        assert sorted(ds["file_name"]) == ["cat/cat-0.jpg", "cat/cat-1.jpg", "cat/cat-2.png",
                                           "dog/dog-0.jpg", "dog/dog-1.jpg", "dog/dog-2.png"]
    # a folder without split subfolders is one split: any split name gets it
    assert load_source(str(folder), "test").num_rows == 6


def test_parquet_in_the_hubs_layout_and_single_files(tmp_path):
    ds = load_source(str(make_photo_folder(tmp_path / "photos")))
    (tmp_path / "pq" / "data").mkdir(parents=True)
    ds.to_parquet(str(tmp_path / "pq" / "data" / "train-00000-of-00001.parquet"))
    ds.select(range(2)).to_parquet(str(tmp_path / "pq" / "data" / "test-00000-of-00001.parquet"))
    assert load_source(str(tmp_path / "pq"), "train").num_rows == 6
    test = load_source(str(tmp_path / "pq"), "test")
    assert test.num_rows == 2 and test["file_name"] == ds["file_name"][:2]
    assert load_source(f"parquet:{tmp_path / 'pq' / 'data' / 'test-00000-of-00001.parquet'}").num_rows == 2
    with pytest.raises(ProtectionError, match="no split 'validation'.*'test', 'train'"):
        load_source(str(tmp_path / "pq"), "validation")


def test_save_to_disk_folders_and_the_bundled_slice(tmp_path):
    ds = load_source("bundled", "test")
    assert ds.num_rows == 932
    ds.select(range(5)).save_to_disk(str(tmp_path / "one"))
    assert load_source(str(tmp_path / "one")).num_rows == 5
    datasets.DatasetDict({"train": ds.select(range(3))}).save_to_disk(str(tmp_path / "dict"))
    with pytest.raises(ProtectionError, match="without a 'test' split"):
        load_source(str(tmp_path / "dict"), "test")


def test_hub_dataset_ids(hub, tmp_path):
    repo_id = hub.repo_id("photos")
    ds = load_source(str(make_photo_folder(tmp_path / "photos")))
    ds.push_to_hub(repo_id, token=hub.tokens["alice"])
    back = load_source(repo_id, "train")
    assert back.num_rows == 6 and back.features["label"].names == ["cat", "dog"]
    with pytest.raises(ProtectionError, match="cannot be loaded"):
        load_source(hub.repo_id("missing"), "train")


@pytest.mark.parametrize("spec, match", [("no/such/folder/here", "does not exist"), ("a b", "not a Hub dataset id"),
                                         ("imagefolder:/no/such/dir", "does not exist"),
                                         ("FILE", "not Parquet")])
def test_errors_name_what_was_tried(tmp_path, spec, match):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ProtectionError, match=match):
        load_source(spec.replace("FILE", str(tmp_path / "notes.txt")))


def test_streaming_map_yields_images_as_images(tmp_path):
    """IterableDataset.map(protect(...)) forgets the output features: the transform gives images back as images
    (PNG-encoded, within epsilon), with or without a cast back to the input's features; Dataset.map keeps cells."""
    import numpy as np

    from hf_unlearnable import protect

    ds = load_source(str(make_photo_folder(tmp_path / "photos")))
    stream = ds.to_iterable_dataset()
    rows = list(stream.map(protect(method="random"), batched=True))
    cast = next(iter(stream.map(protect(method="random"), batched=True).cast(stream.features)))
    mapped = ds.map(protect(method="random"), batched=True)
    assert len(rows) == len(ds) and rows[0]["file_name"] == ds[0]["file_name"]
    for row, src, kept in zip(rows, ds, mapped):
        assert isinstance(row["image"], PIL.Image.Image) and row["image"].format == "PNG"
        assert row["image"].size == src["image"].size and row["image"].mode == src["image"].mode
        a, b = np.asarray(row["image"], dtype=np.int16), np.asarray(src["image"], dtype=np.int16)
        assert 0 < np.abs(a - b).max() <= 8
        assert np.array_equal(np.asarray(kept["image"]), np.asarray(row["image"]))   # the same bytes either way
    assert isinstance(cast["image"], PIL.Image.Image)
    assert np.array_equal(np.asarray(cast["image"]), np.asarray(rows[0]["image"]))
