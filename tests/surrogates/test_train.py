"""train_surrogate: a surrogate for the data owner's own classes (12 here), saved, reloaded and used by em."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

datasets = pytest.importorskip("datasets")

from hf_unlearnable import ProtectionError, Surrogate, protect, train_surrogate  # noqa: E402
from hf_unlearnable.surrogates.train import DEFAULT_RESOLUTION  # noqa: E402
from tests.conftest import build_dataset, tiny_images  # noqa: E402

NAMES = [f"breed_{k}" for k in range(12)]
FAST = dict(epochs=1, width=8, progress=False)


def twelve_classes(n: int = 24, seed: int = 0, size: int = 32):
    """n rows (n / 12 per class) of 32x32 PNGs, a 12-name ClassLabel column and two extra columns."""
    return build_dataset(tiny_images(n, seed, size), [i % 12 for i in range(n)],
                         label_feature=datasets.ClassLabel(names=NAMES))


@pytest.fixture(scope="module")
def trained():
    ds = twelve_classes()
    return train_surrogate(ds, test=twelve_classes(12, seed=1), seed=3, **FAST), ds


def test_records_the_classes_the_size_and_the_training(trained):
    sur, _ = trained
    assert isinstance(sur, Surrogate) and not sur.training
    assert sur.num_classes == 12 and sur.config.class_names == NAMES
    assert sur.config.image_size == [DEFAULT_RESOLUTION, DEFAULT_RESOLUTION] == [32, 32]
    assert sur.config.arch == "convnet" and sur.config.width == 8
    t = sur.config.training
    assert t["train_rows"] == 24 and t["test_rows"] == 12 and t["epochs"] == 1 and t["seed"] == 3
    assert 0 <= t["test_accuracy"] <= 1 and t["seconds"] >= 0 and t["batch_size"] == 128
    assert t["resolution"] == [32, 32] and t["adversarial_epsilon"] == 0
    assert sur(torch.rand(2, 3, 32, 32)).shape == (2, 12)


def test_same_seed_same_weights():
    ds = twelve_classes(12)
    a, b = (train_surrogate(ds, seed=5, **FAST) for _ in range(2))
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_save_and_load_round_trip(trained, tmp_path):
    sur, _ = trained
    path = tmp_path / "pets-surrogate"
    sur.save_pretrained(path)
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["num_classes"] == 12 and cfg["class_names"] == NAMES and cfg["training"]["train_rows"] == 24
    loaded = Surrogate.from_pretrained(path)
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(sur(x), loaded(x))
        assert torch.equal(sur.features(x), loaded.features(x))
    assert "12 classes" in loaded.card("me/pets")


def test_em_per_batch_accepts_all_twelve_classes(trained, tmp_path):
    sur, ds = trained
    path = tmp_path / "sur"
    sur.save_pretrained(path)
    # the bundled surrogate knows 10 classes: labels 10 and 11 are refused
    with pytest.raises(ProtectionError, match="out of range"):
        ds.map(protect(method="em", steps=1), batched=True, with_indices=True, load_from_cache_file=False)
    out = ds.map(protect(method="em", surrogate=str(path), steps=1), batched=True, with_indices=True,
                 load_from_cache_file=False)
    assert out["label"] == ds["label"] and max(out["label"]) == 11
    before = np.stack([np.asarray(im, dtype=np.int16) for im in ds["img"]])
    after = np.stack([np.asarray(im, dtype=np.int16) for im in out["img"]])
    assert 0 < np.abs(after - before).max() <= 8


def test_mixed_sizes_are_resized_to_the_resolution():
    images = tiny_images(6, size=16) + tiny_images(6, seed=1, size=24)
    ds = build_dataset(images, [i % 3 for i in range(12)], label_feature=datasets.ClassLabel(names=["a", "b", "c"]))
    sur = train_surrogate(ds, resolution=16, **FAST)
    assert sur.config.image_size == [16, 16] and sur.num_classes == 3
    sur = train_surrogate(ds, resolution=(16, 24), **FAST)
    assert sur.config.image_size == [16, 24]


def test_adversarial_training_is_recorded():
    sur = train_surrogate(twelve_classes(12), adversarial_epsilon=2 / 255, adversarial_steps=2, **FAST)
    assert sur.config.training["adversarial_epsilon"] == pytest.approx(2 / 255)
    assert sur.config.training["adversarial_steps"] == 2


def test_plain_int_labels_without_names():
    ds = twelve_classes(12).cast_column("label", datasets.Value("int64"))
    sur = train_surrogate(ds, **FAST)
    assert sur.num_classes == 12 and sur.config.class_names is None


@pytest.mark.parametrize("kwargs, match", [
    (dict(epochs=0), "epochs=0"),
    (dict(epochs=1.5), "epochs=1.5"),
    (dict(epochs=True), "epochs=True"),
    (dict(arch="vit"), "arch='vit'.*convnet"),
    (dict(arch=["convnet"]), r"arch=\[.convnet.\]"),
    (dict(arch="transformers"), "from_transformers"),
    (dict(width=0), "width=0"),
    (dict(resolution=0), "resolution=0"),
    (dict(resolution=4), "at least 8x8"),
    (dict(resolution=(32,)), r"resolution=\(32,\)"),
    (dict(resolution="32"), "resolution='32'"),
    (dict(resolution=32.0), "resolution=32.0"),
    (dict(adversarial_epsilon=2), "did you mean 2/255"),
    (dict(adversarial_epsilon=-0.1), "adversarial_epsilon=-0.1"),
    (dict(adversarial_steps=0), "adversarial_steps=0"),
    (dict(seed="a"), "seed='a'"),
    (dict(label_column="nope"), "label_column='nope'"),
    (dict(image_column="caption"), "caption"),
])
def test_bad_arguments_are_refused_naming_them(kwargs, match):
    ds = twelve_classes(12)
    with pytest.raises(ProtectionError, match=match):
        train_surrogate(ds, **{**FAST, **kwargs})


def test_bad_data_is_refused():
    one_class = build_dataset(tiny_images(4), [0] * 4, label_feature=datasets.ClassLabel(names=["only"]))
    with pytest.raises(ProtectionError, match="at least 2 classes"):
        train_surrogate(one_class, **FAST)
    unnamed = build_dataset(tiny_images(4), [0, 1, 0, 1]).rename_column("label", "y").cast_column(
        "y", datasets.Value("int64"))
    with pytest.raises(ProtectionError, match="label_column="):
        train_surrogate(unnamed, **FAST)
    with pytest.raises(ProtectionError, match="pass one split"):
        train_surrogate(datasets.DatasetDict({"train": twelve_classes(12)}), **FAST)
    with pytest.raises(ProtectionError, match="expected a datasets.Dataset"):
        train_surrogate([1, 2, 3], **FAST)
    # test data with other classes: refused before any training
    other = build_dataset(tiny_images(4), [0, 1, 0, 1], label_feature=datasets.ClassLabel(names=["x", "y"]))
    with pytest.raises(ProtectionError, match="name their classes differently"):
        train_surrogate(twelve_classes(12), test=other, **FAST)
