"""Smoke test of benchmarks/anydata.py on tiny sizes from the bundled CIFAR-10 slice: the image-folder build step
(random sizes, JPEG, class folders, loaded back with `load_dataset("imagefolder")`), one cheap row (clean + random
per batch, victims at 32x32 for one epoch), the outputs, and the resume (a rerun redoes nothing)."""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from hf_unlearnable import evaluate
from tests.conftest import CLASS_NAMES

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import anydata  # noqa: E402


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    state = tmp_path_factory.mktemp("anydata-state")
    manifest = anydata.build_data(state / "data", "bundled", 40, 20, seed=0)
    return state, manifest


def test_build_step_writes_an_image_folder_of_random_sizes(built):
    state, manifest = built
    root = Path(manifest["root"])
    for split, n in (("train", 40), ("test", 20)):
        files = sorted(root.glob(f"{split}/*/*.jpg"))
        assert len(files) == n
        assert sorted({f.parent.name for f in files}) == CLASS_NAMES          # class-balanced: every class
        sizes = [PIL.Image.open(f).size for f in files]
        assert all(48 <= w <= 256 and 48 <= h <= 256 for w, h in sizes)
        assert len(set(sizes)) > n // 2                                       # sizes really vary
        assert manifest["splits"][split]["rows"] == n
    ds = anydata.load_images(root, "train")
    assert set(ds.features) == {"image", "label"}
    assert ds.features["label"].names == CLASS_NAMES
    assert np.bincount(ds["label"]).tolist() == [4] * 10
    # cached: a second call reuses the folder (same manifest, files untouched)
    mtime = (root / "manifest.json").stat().st_mtime_ns
    assert anydata.build_data(root, "bundled", 40, 20, seed=0) == manifest
    assert (root / "manifest.json").stat().st_mtime_ns == mtime


@pytest.mark.skipif("resolution" not in inspect.signature(evaluate).parameters,
                    reason="evaluate() has no resolution= keyword yet")
def test_clean_and_random_rows_end_to_end_and_resume(built, tmp_path):
    state, _ = built
    out = tmp_path / "out"
    argv = ["--data", "bundled", "--train-rows", "40", "--test-rows", "20", "--epochs", "1", "--resolutions", "32",
            "--only", "clean", "random", "--skip-12mp", "--out-dir", str(out), "--state-dir", str(state)]
    assert anydata.main(argv) == 0
    result = json.loads((out / "anydata.json").read_text())
    rows = {r["name"]: r for r in result["rows"]}
    assert list(rows) == ["clean", "random"]
    for r in rows.values():
        assert 0 <= r["victims"]["32"]["test_accuracy"] <= 1
    assert rows["random"]["rows"] == 40 and rows["random"]["images_per_second"] > 0
    assert rows["random"]["peak_rss_mib"] > 0
    md = (out / "anydata.md").read_text()
    assert "| row | victim acc @32 | images/s | peak RSS (MiB) |" in md and "| random |" in md
    # resume: every result comes from the state files, nothing is crafted or trained again
    cached = sorted((state / "state").glob("*.json"))
    stamps = [p.stat().st_mtime_ns for p in cached]
    assert anydata.main(argv) == 0
    assert [p.stat().st_mtime_ns for p in cached] == stamps
    assert json.loads((out / "anydata.json").read_text())["rows"] == result["rows"]
