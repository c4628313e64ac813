"""Smoke test of benchmarks/anydata.py on tiny sizes from the bundled CIFAR-10 slice: the image-folder build step
(random sizes, JPEG, class folders, loaded back with `load_dataset("imagefolder")`), one cheap row (clean + random
per batch, victims at 32x32 for one epoch), the downloaded-bank rows (a class-wise EM bank crafted with
em.max_iters=1 on disjoint rows, applied under a permuted class map to the image folder and to the native 32x32
rows, beside clean-native), the outputs, and the resume (a rerun redoes nothing)."""

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


def test_predicted_classes_stand_in_for_the_labels(built, tmp_path):
    """The ar-label-agnostic row: ar with the surrogate's predicted classes as labels, the true labels kept."""
    import datasets

    state, manifest = built
    argv = ["--data", "bundled", "--train-rows", "40", "--test-rows", "20", "--epochs", "1", "--resolutions", "32",
            "--only", "ar-label-agnostic", "--skip-12mp", "--out-dir", str(tmp_path), "--state-dir", str(state)]
    assert anydata.main(argv) == 0
    (row,) = json.loads((tmp_path / "anydata.json").read_text())["rows"]
    assert row["name"] == "ar-label-agnostic" and 0 <= row["victims"]["32"]["test_accuracy"] <= 1
    source = anydata.load_images(manifest["root"], "train")
    protected = datasets.load_from_disk(str(state / "protected" / "ar-label-agnostic"))
    assert protected.column_names == source.column_names and protected["label"] == source["label"]
    guessed = anydata.predicted_classes(source)
    assert len(guessed) == 40 and set(guessed) <= set(range(10))


def test_class_map_is_a_seeded_derangement():
    names = CLASS_NAMES
    m = anydata.derangement_class_map(names, 0)
    assert sorted(m) == sorted(names) and sorted(m.values()) == list(range(10))      # a permutation
    assert all(m[n] != i for i, n in enumerate(names))                                # no class keeps its pattern
    assert anydata.derangement_class_map(names, 0) == m                               # seeded
    assert any(anydata.derangement_class_map(names, s) != m for s in (1, 2, 3))


def test_options_reach_the_bank():
    extra = anydata.parse_options(["em.max_iters=1"])
    assert extra["bank"] == {"max_iters": 1} and extra["em-classwise"] == {"max_iters": 1}
    assert "bank-permuted" not in extra and "bank-permuted-native" not in extra    # the rows use the bank's options
    assert anydata.parse_options(["bank.steps=2"]) == {"bank": {"steps": 2}}
    assert anydata.parse_options(["bank-permuted.steps=2"]) == {"bank": {"steps": 2}}
    assert anydata.parse_options(["bayes.passes=5"]) == {"bayes": {"passes": 5}}
    for bad in ("clean-native.x=1", "clean.x=1"):
        with pytest.raises(SystemExit):
            anydata.parse_options([bad])


@pytest.mark.skipif("resolution" not in inspect.signature(evaluate).parameters,
                    reason="evaluate() has no resolution= keyword yet")
def test_bank_rows_end_to_end_and_resume(built, tmp_path):
    import datasets

    from hf_unlearnable import load_noise

    state, manifest = built
    out = tmp_path / "out"
    argv = ["--data", "bundled", "--train-rows", "40", "--test-rows", "20", "--epochs", "1", "--resolutions", "32",
            "--only", "bank-permuted", "clean-native", "bank-permuted-native", "--bank-per-class", "2",
            "--option", "em.max_iters=1", "--option", "em.min_iters=1", "--skip-12mp",
            "--out-dir", str(out), "--state-dir", str(state)]
    assert anydata.main(argv) == 0
    result = json.loads((out / "anydata.json").read_text())
    rows = {r["name"]: r for r in result["rows"]}
    assert list(rows) == ["bank-permuted", "clean-native", "bank-permuted-native"]
    # the bank: crafted once with the --option, on rows 4..5 of each class (the benchmark has 0..3), saved
    bank = result["bank"]
    assert bank["config"]["options"] == {"mode": "classwise", "max_iters": 1, "min_iters": 1}
    assert bank["config"]["per_class_rows"] == [4, 6]
    craft = bank["craft"]
    assert craft["rows"] == 20 and craft["image_size"] == [32, 32] and craft["craft_seconds"] > 0
    assert craft["peak_rss_mib"] > 0
    noise = load_noise(str(state / "noise" / "bank"))
    assert noise.kind == "classwise" and len(noise) == 10
    # the mapping: a derangement, recorded, used by both bank rows
    m = bank["class_map"]
    assert m == anydata.derangement_class_map(CLASS_NAMES, 0)
    assert all(m[n] != i for i, n in enumerate(CLASS_NAMES))
    for name in ("bank-permuted", "bank-permuted-native"):
        r = rows[name]
        assert r["class_map"] == m and r["identity"]["bank"] == bank["config"]
        assert r["rows"] == 40 and r["images_per_second"] > 0 and r["peak_rss_mib"] > 0
        assert 0 <= r["victims"]["32"]["test_accuracy"] <= 1
    assert list(rows["clean-native"]["victims"]) == ["32"]
    assert 0 <= rows["clean-native"]["victims"]["32"]["test_accuracy"] <= 1
    # the native rows are the folder's source rows at 32x32, each with its mapped class's pattern
    prot = datasets.load_from_disk(str(state / "protected" / "bank-permuted-native"))
    clean = anydata.load_native("bundled", "train", 40)
    assert prot["label"] == clean["label"] and prot[0]["img"].size == (32, 32)
    steps = np.asarray(noise.steps)
    names = clean.features["label"].names
    for i in range(0, 40, 9):
        x = np.asarray(clean[i]["img"].convert("RGB"), dtype=int)
        d = np.asarray(prot[i]["img"].convert("RGB"), dtype=int) - x
        agree = [np.mean(np.sign(d) == np.sign(steps[k])) for k in range(10)]
        assert int(np.argmax(agree)) == m[names[clean[i]["label"]]]
    folder = datasets.load_from_disk(str(state / "protected" / "bank-permuted"))
    assert [im.size for im in folder["image"][:5]] == [im.size for im in anydata.load_images(
        manifest["root"], "train")["image"][:5]]                                # each image keeps its own size
    md = (out / "anydata.md").read_text()
    assert "| bank-permuted |" in md and "| clean-native |" in md and "| bank-permuted-native |" in md
    assert "- bank-permuted-native: " in md and "Class map" in md and "per_class_rows(labels, 4, 6)" in md
    # resume: nothing crafted, applied or trained again
    cached = sorted((state / "state").glob("*.json"))
    stamps = [p.stat().st_mtime_ns for p in cached]
    assert anydata.main(argv) == 0
    assert [p.stat().st_mtime_ns for p in cached] == stamps
    assert json.loads((out / "anydata.json").read_text())["rows"] == result["rows"]
