"""The data people have: mixed sizes, no labels, other classes than a downloaded bank, and nothing left silently
unprotected. (Sizes and modes for every method are in the invariant suite, test_transform.py.)"""

from __future__ import annotations

import numpy as np
import pytest
from datasets import ClassLabel

from hf_unlearnable import ProtectionError, craft, evaluate, load_noise, protect
from hf_unlearnable.noise import Noise, NoiseConfig
from tests.conftest import FAST_OPTIONS, build_dataset, stored_arrays, tiny_images

EM_FAST = dict(FAST_OPTIONS["em"])


def _mixed_sizes(n: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (int(rng.integers(20, 70)), int(rng.integers(20, 70)), 3), dtype=np.uint8)
            for _ in range(n)]


def _changed(before, after) -> list[int]:
    return [int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()) for a, b in zip(before, after)]


# -- any size ----------------------------------------------------------------------------------------------------
def test_classwise_noise_applies_at_any_size_and_records_its_resolution(tmp_path):
    ds = build_dataset(_mixed_sizes())
    noise = craft(ds, "em", mode="classwise", resolution=24, **EM_FAST)
    assert noise.resolution == (24, 24) and noise.config.source["resolution"] == [24, 24]
    assert noise.config.source["image_sizes"]["distinct"] > 1
    noise.save_pretrained(tmp_path / "n")
    assert "working resolution" in noise.card() and "24" in noise.card()
    out = ds.map(protect(noise=load_noise(tmp_path / "n")), batched=True, batch_size=6)
    before, after = stored_arrays(ds), stored_arrays(out)
    assert [a.shape for a in after] == [b.shape for b in before]
    assert all(0 < d <= 8 for d in _changed(before, after))
    # the stretched pattern keeps its strength (each working pixel becomes a block)
    d = np.abs(after[0].astype(np.int16) - before[0].astype(np.int16))
    assert d.mean() > 0.9 * np.abs(noise.steps[ds[0]["label"]].astype(np.int16)).mean()


def test_noise_at_its_own_size_is_applied_exactly(tiny_ds):
    noise = craft(tiny_ds, "em", mode="classwise", **EM_FAST)
    out = stored_arrays(tiny_ds.map(protect(noise=noise), batched=True))
    for x, y, label in zip(stored_arrays(tiny_ds), out, tiny_ds["label"]):
        expected = np.clip(x.astype(np.int16) + noise.steps[label], 0, 255)
        assert np.array_equal(y, expected)


def test_per_batch_em_works_at_the_working_resolution(batch_options):
    ds = build_dataset(_mixed_sizes(8) + [np.full((300, 200, 3), 128, np.uint8)])
    out = ds.map(protect(method="em", resolution=16, **batch_options("em")), batched=True, batch_size=9)
    before, after = stored_arrays(ds), stored_arrays(out)
    assert [a.shape for a in after] == [b.shape for b in before]
    assert all(0 < d <= 8 for d in _changed(before, after))
    # the large image's noise is as strong as a small one's (it was 1/255 on average at full size before)
    assert np.abs(after[-1].astype(np.int16) - 128).mean() > 2.5


def test_per_batch_em_chunks_by_pixels(monkeypatch, batch_options):
    import hf_unlearnable.methods.em as em

    calls = []
    real = em.pgd_min
    monkeypatch.setattr(em, "pgd_min", lambda model, x, *a, **k: calls.append(len(x)) or real(model, x, *a, **k))
    monkeypatch.setattr(__import__("hf_unlearnable.methods._pgd", fromlist=["_"]), "PGD_PIXELS", 2 * 64 * 64)
    build_dataset(tiny_images(6)).map(protect(method="em", resolution=64, **batch_options("em")), batched=True)
    assert calls == [2, 2, 2]


def test_evaluate_trains_at_a_working_resolution_on_mixed_sizes():
    ds = build_dataset(_mixed_sizes(20))
    report = evaluate(ds, ds, clean=ds, epochs=1, resolution=16, progress=False)
    assert report.resolution == [16, 16] and "at 16x16" in report.to_markdown()
    assert evaluate(ds, ds, epochs=1, progress=False).resolution == [32, 32]


def test_evaluate_flags_a_victim_at_chance():
    ds = build_dataset(tiny_images(20))       # random textures: nothing to learn, the clean victim is at chance
    report = evaluate(ds, ds, clean=ds, epochs=1, progress=False)
    clean = next(r for r in report.rows if r["train_set"] == "clean")
    assert clean["at_chance"] == (clean["test_accuracy"] <= 0.15)
    if clean["at_chance"]:
        assert "chance level" in report.warnings[0] and "**Warning:**" in report.to_markdown()
    assert "no victim trained on clean data" in evaluate(ds, ds, epochs=1, progress=False).warnings[0]


# -- no labels ---------------------------------------------------------------------------------------------------
def test_label_agnostic_classwise_noise_needs_no_labels_to_apply(tmp_path):
    ds = build_dataset(_mixed_sizes(24), label_column=None)
    noise = craft(ds, "em", mode="classwise", clusters=3, **EM_FAST)
    assert noise.config.clustering["clusters"] == 3 and len(noise) == 3
    assert sum(noise.config.clustering["rows_per_cluster"]) == 24
    noise.save_pretrained(tmp_path / "n")
    loaded = load_noise(tmp_path / "n")
    assert np.array_equal(loaded.centroids, noise.centroids)
    assert "clusters" in loaded.card()
    out = ds.map(protect(noise=loaded), batched=True, batch_size=5)
    assert out.column_names == ds.column_names
    assert all(0 < d <= 8 for d in _changed(stored_arrays(ds), stored_arrays(out)))
    # the same clusters as when crafting: rows get their own cluster's pattern
    again = ds.map(protect(noise=loaded), batched=True, batch_size=24)
    assert [c["bytes"] for c in again.cast_column("img", __import__("datasets").Image(decode=False))["img"]] == \
        [c["bytes"] for c in out.cast_column("img", __import__("datasets").Image(decode=False))["img"]]


def test_clusters_use_features_and_scores_and_older_centroids_still_assign():
    """Clustering runs on the surrogate's features and class scores side by side; centroids written before the
    scores were added (features alone) are assigned in their own space; any other width is refused."""
    from hf_unlearnable import _clusters
    from hf_unlearnable.errors import ProtectionError

    images = np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    both, pred = _clusters.features(images, predictions=True)
    alone = _clusters.features(images, scores=False)
    assert both.shape[1] == alone.shape[1] + 10 and np.allclose(np.linalg.norm(both, axis=1), 1, atol=1e-5)
    assert np.allclose(both[:, :alone.shape[1]] * np.sqrt(2), alone, atol=1e-5)
    old = alone[[0, 5]]                       # two centroids in the features-only space
    assert np.array_equal(_clusters.assign(images, old), _clusters.nearest(alone, old))
    new = both[[0, 5]]
    assert np.array_equal(_clusters.assign(images, new), _clusters.nearest(both, new))
    with pytest.raises(ProtectionError, match="dimensions"):
        _clusters.assign(images, np.zeros((2, 7), dtype=np.float32))


def test_label_agnostic_samplewise_craft_and_per_batch(batch_options):
    ds = build_dataset(tiny_images(12), label_column=None)
    noise = craft(ds, "em", mode="samplewise", clusters=2, **EM_FAST)
    assert noise.kind == "samplewise" and noise.config.stats["clustering"]["clusters"] == 2
    out = ds.map(protect(noise=noise), batched=True)
    assert all(d > 0 for d in _changed(stored_arrays(ds), stored_arrays(out)))
    per_batch = ds.map(protect(method="em", **batch_options("em")), batched=True)
    assert all(d > 0 for d in _changed(stored_arrays(ds), stored_arrays(per_batch)))


# -- a downloaded bank on your own classes -----------------------------------------------------------------------
def _bank() -> Noise:
    steps = np.stack([np.full((32, 32, 3), (-1) ** k * (k % 4 + 1), dtype=np.int8) for k in range(10)])
    cfg = NoiseConfig(method="test", kind="classwise", epsilon=8 / 255, image_shape=[32, 32, 3], num_classes=10,
                      class_names=[f"c{k}" for k in range(10)])
    return Noise(steps, cfg)


def test_class_map_index_and_dict_on_other_classes_and_sizes():
    ds = build_dataset(_mixed_sizes(6), labels=[0, 1, 2, 0, 1, 2], label_feature=ClassLabel(names=["x", "y", "z"]))
    with pytest.raises(ProtectionError, match="class_map="):
        ds.map(protect(noise=_bank()), batched=True)     # other names: never silently by index
    by_index = stored_arrays(ds.map(protect(noise=_bank(), class_map="index"), batched=True))
    by_name = stored_arrays(ds.map(protect(noise=_bank(), class_map={"x": "c0", "y": 1, 2: "c2"}), batched=True))
    for a, b in zip(by_index, by_name):
        assert np.array_equal(a, b)
    permuted = stored_arrays(ds.map(protect(noise=_bank(), class_map={"x": 5, "y": 6, "z": 7}), batched=True))
    before = stored_arrays(ds)
    assert (permuted[0].astype(np.int16) - before[0]).max() <= 2      # class x -> pattern 5 (= -2 steps)
    with pytest.raises(ProtectionError, match="not in class_map"):
        ds.map(protect(noise=_bank(), class_map={"x": 1}), batched=True)
    with pytest.raises(ProtectionError, match="not a class of this noise"):
        protect(noise=_bank(), class_map={"x": "nope"})
    with pytest.raises(ProtectionError, match="'index'"):
        protect(noise=_bank(), class_map="by-name")
    with pytest.raises(ProtectionError, match="noise=<class-wise Noise>"):
        protect(method="random", class_map="index")


def test_class_map_index_refuses_more_classes_than_the_bank():
    ds = build_dataset(tiny_images(12), labels=list(range(12)), label_feature=ClassLabel(num_classes=12))
    with pytest.raises(ProtectionError, match=r"label 10 has no pattern.*10 classes"):
        ds.map(protect(noise=_bank(), class_map="index"), batched=True, with_indices=True)


# -- nothing silently unprotected --------------------------------------------------------------------------------
def test_a_class_without_rows_at_craft_time_is_refused_when_applied(tiny_ds):
    only_some = tiny_ds.filter(lambda r: r["label"] != 3)
    noise = craft(only_some, "em", mode="classwise", **EM_FAST)
    assert noise.config.stats["empty_patterns"] == [3]
    only_some.map(protect(noise=noise), batched=True)                 # rows of the crafted classes: fine
    with pytest.raises(ProtectionError, match=r"row 3: class 3 \('cat'\) has an empty pattern"):
        tiny_ds.map(protect(noise=noise), batched=True, with_indices=True)


@pytest.mark.parametrize("options", [dict(mode="samplewise", lr=1e30), dict(mode="classwise", lr=float("inf"))])
def test_a_diverged_craft_is_an_error_not_zero_noise(tiny_ds, options):
    with pytest.raises(ProtectionError, match=r"not finite|zero on every pixel|must be a finite number") as err:
        craft(tiny_ds, "em", **{**EM_FAST, **options})
    assert "lr=" in str(err.value)


def test_zero_noise_is_refused():
    with pytest.raises(ProtectionError, match="zero on every pixel"):
        Noise.from_deltas(np.zeros((2, 8, 8, 3)), ids=["a", "b"], epsilon=8 / 255, method="em")


def test_a_row_that_would_stay_unchanged_is_refused(make_ds):
    steps = np.zeros((10, 32, 32, 3), dtype=np.int8)
    steps[:, 0, 0, 0] = 1                  # one pixel up: a white image there cannot change
    cfg = NoiseConfig(method="test", kind="classwise", epsilon=8 / 255, image_shape=[32, 32, 3], num_classes=10)
    images = [np.full((32, 32, 3), 100 + i, np.uint8) for i in range(4)]
    images[2] = np.full((32, 32, 3), 255, np.uint8)
    with pytest.raises(ProtectionError, match=r"row 2: the noise leaves this image unchanged"):
        make_ds(images=images).map(protect(noise=Noise(steps, cfg)), batched=True, with_indices=True)


# -- per-batch em: the seed matters ------------------------------------------------------------------------------
def test_per_batch_em_seed_changes_the_bytes(tiny_ds, batch_options):
    a, b, c = (tiny_ds.map(protect(method="em", seed=s, **batch_options("em")), batched=True) for s in (0, 1, 0))
    assert stored_arrays(a)[0].tobytes() != stored_arrays(b)[0].tobytes()
    assert all(np.array_equal(x, y) for x, y in zip(stored_arrays(a), stored_arrays(c)))


def test_resize_steps_is_nearest_neighbour_on_whole_steps():
    import torch

    from hf_unlearnable._images import fit_steps, resize_steps

    rng = np.random.default_rng(0)
    steps = rng.integers(-8, 9, (32, 32, 3)).astype(np.int16)
    assert np.array_equal(resize_steps(steps, (96, 64, 3)), steps.repeat(3, 0).repeat(2, 1))   # whole blocks
    for shape in [(32, 32, 3), (97, 45, 3), (20, 28, 3), (3000, 2000, 3)]:
        out = resize_steps(steps, shape)
        ref = torch.nn.functional.interpolate(torch.from_numpy(steps).permute(2, 0, 1)[None].float(),
                                              size=shape[:2], mode="nearest-exact")[0].permute(1, 2, 0).numpy()
        assert out.dtype == np.int16 and out.shape == shape
        assert (out == ref).mean() > 0.97      # torch's float scale rounds a few boundaries the other way
    gray = resize_steps(steps, (40, 40, 1))
    assert gray.shape == (40, 40, 1) and np.abs(gray).max() <= 8
    # float noise: gray takes the colour mean before rounding; budget clipped to k
    delta = rng.uniform(-20 / 255, 20 / 255, (16, 16, 3))
    assert np.abs(fit_steps(delta, (50, 50, 3), 8)).max() == 8
    assert np.array_equal(fit_steps(delta, (16, 16, 2), 8)[..., 0],
                          np.clip(np.rint(delta.mean(2) * 255), -8, 8).astype(np.int16))


def test_a_sideways_phone_photo_is_protected_as_it_is_shown():
    import io

    import PIL.Image

    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)        # stored 50 wide, 30 high
    exif = PIL.Image.Exif()
    exif[0x0112] = 6                                                 # "rotate 90 CW to display"
    buf = io.BytesIO()
    PIL.Image.fromarray(arr).save(buf, format="JPEG", quality=95, exif=exif)
    shown = PIL.ImageOps.exif_transpose(PIL.Image.open(io.BytesIO(buf.getvalue())))
    ds = build_dataset([{"bytes": buf.getvalue(), "path": None}] + tiny_images(3))
    out = stored_arrays(ds.map(protect(method="random"), batched=True))
    assert out[0].shape == (50, 30, 3)                               # as displayed: 30 wide, 50 high
    assert 0 < np.abs(out[0].astype(np.int16) - np.asarray(shown)).max() <= 8


def test_random_refuses_a_resolution_and_clusters_need_a_method_with_classes(tiny_ds):
    with pytest.raises(ProtectionError, match="resolution= applies to methods that run a network"):
        protect(method="random", resolution=64)
    with pytest.raises(ProtectionError, match="'random' uses no labels"):
        craft(tiny_ds.remove_columns("label"), "random", clusters=3)
    with pytest.raises(ProtectionError, match="noise= must be a Noise"):
        protect(noise="me/noise", class_map="index")


def test_kmeans_keeps_every_cluster_or_says_why():
    from hf_unlearnable._clusters import kmeans

    z = np.repeat(np.eye(3, dtype=np.float32), 7, 0)
    with pytest.raises(ProtectionError, match="only 3 distinct groups"):
        kmeans(z, 5, 0)
    labels, _ = kmeans(z + np.random.default_rng(0).normal(0, 0.01, z.shape).astype(np.float32), 5, 0)
    assert (np.bincount(labels, minlength=5) > 0).all()


def test_kmeans_can_start_from_given_groups():
    """The surrogate's predicted classes as the start: their means are the first centres (groups left empty are
    filled k-means++ style), so well-separated groups come back as they were given."""
    from hf_unlearnable._clusters import kmeans

    rng = np.random.default_rng(0)
    centres = np.eye(4, 8, dtype=np.float32)
    start = np.repeat(np.arange(3), 10)                 # 3 groups given, a 4th cluster to find
    z = np.concatenate([centres[start], centres[[3] * 10]]) + rng.normal(0, 0.01, (40, 8)).astype(np.float32)
    labels, _ = kmeans(z, 4, 0, start=np.concatenate([start, np.full(10, 3)]))
    assert np.array_equal(labels, np.repeat(np.arange(4), 10))
    labels, _ = kmeans(z, 4, 0, start=np.concatenate([start, start[:10]]))   # group 3 empty: found anyway
    groups = [set(labels[i:i + 10]) for i in range(0, 40, 10)]
    assert all(len(g) == 1 for g in groups) and len(set.union(*groups)) == 4      # the same partition
