"""Every bad input ends in one hf_unlearnable.ProtectionError (a ValueError) whose message names the column, row
or argument, and says how to fix it."""

from __future__ import annotations

import io

import numpy as np
import PIL.Image
import pytest
from datasets import Features, Image, Value

import hf_unlearnable
from hf_unlearnable import ProtectionError, craft, evaluate, protect
from hf_unlearnable.methods import METHODS
from hf_unlearnable.noise import Noise, NoiseConfig
from tests.conftest import FAST_OPTIONS, png_cell, tiny_images

EM_FAST = dict(FAST_OPTIONS["em"], mode="classwise")


def classwise_noise(num_classes: int = 10, value: int = 2) -> Noise:
    steps = np.full((num_classes, 32, 32, 3), value, dtype=np.int8)
    cfg = NoiseConfig(method="test", kind="classwise", epsilon=8 / 255, image_shape=[32, 32, 3],
                      num_classes=num_classes)
    return Noise(steps, cfg)


def test_protection_error_is_a_value_error():
    assert issubclass(ProtectionError, ValueError)
    assert hf_unlearnable.ProtectionError is ProtectionError


# -- images ------------------------------------------------------------------------------------------------------
def _with_row_in_mode(make_ds, row: int, image):
    cells = [png_cell(a) for a in tiny_images(20)]
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    cells[row] = {"bytes": buf.getvalue(), "path": None}
    return make_ds(images=cells)


def test_palette_image_names_row_and_a_lossless_fix(make_ds):
    pal = PIL.Image.fromarray(tiny_images(1)[0]).convert("P")
    ds = _with_row_in_mode(make_ds, 13, pal)
    with pytest.raises(ProtectionError) as err:
        ds.map(protect(method="random"), batched=True, batch_size=8, with_indices=True)
    msg = str(err.value)
    assert "'img'" in msg and "row 13" in msg and "'P'" in msg and "cast_column" in msg and "RGB" in msg
    # the fix the message proposes works, and is lossless for a palette image
    fixed = ds.cast_column("img", Image(mode="RGB"))
    assert np.array_equal(np.asarray(fixed[13]["img"]), np.asarray(pal.convert("RGB")))
    assert fixed.map(protect(method="random"), batched=True, batch_size=8).num_rows == ds.num_rows
    with pytest.raises(ProtectionError, match=r"'img'.*row 4.*'P'"):
        craft(_with_row_in_mode(make_ds, 4, pal), "random")


def test_16_bit_image_is_refused_without_advice_that_whitens_it(make_ds):
    scan = PIL.Image.fromarray((np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 60), mode="I;16")
    ds = _with_row_in_mode(make_ds, 2, scan)
    with pytest.raises(ProtectionError) as err:
        ds.map(protect(method="random"), batched=True, with_indices=True)
    msg = str(err.value)
    assert "row 2" in msg and "16" in msg and "8 bits" in msg and "white" in msg
    assert "do not cast" in msg     # the cast that clips 16-bit values is named as the wrong fix, never advised


@pytest.mark.parametrize("garbage", [b"definitely not an image", b"\x89PNG\r\n\x1a\n truncated", b""])
def test_corrupt_image_bytes_name_the_row(make_ds, garbage):
    cells = [png_cell(a) for a in tiny_images(20)]
    cells[17] = {"bytes": garbage, "path": None}
    ds = make_ds(images=cells)
    with pytest.raises(ProtectionError) as err:
        ds.map(protect(method="random"), batched=True, batch_size=8, with_indices=True)
    msg = str(err.value)
    assert "row 17" in msg and "'img'" in msg and ("drop" in msg or "Re-encode" in msg)
    with pytest.raises(ProtectionError, match="row 17"):
        craft(ds, "random")
    with pytest.raises(ProtectionError, match="row 17"):
        evaluate(ds, ds, epochs=1, progress=False)


def test_corrupt_image_without_indices_points_to_with_indices(make_ds):
    cells = [png_cell(a) for a in tiny_images(10)]
    cells[9] = {"bytes": b"junk", "path": None}
    with pytest.raises(ProtectionError, match="with_indices=True"):
        make_ds(images=cells).map(protect(method="random"), batched=True, batch_size=8)


def test_input_columns_is_explained(tiny_ds):
    with pytest.raises(ProtectionError, match="drop input_columns="):
        tiny_ds.map(protect(method="random"), batched=True, input_columns=["img"])


def test_not_batched_is_explained(tiny_ds):
    with pytest.raises(ProtectionError, match="batched=True"):
        tiny_ds.map(protect(method="random"))


def test_ambiguous_or_missing_image_column(tiny_ds, make_ds):
    ds = tiny_ds.add_column("other", [png_cell(a) for a in tiny_images(len(tiny_ds), seed=5)], feature=Image())
    with pytest.raises(ProtectionError, match="image_column"):
        ds.map(protect(method="random"), batched=True)
    with pytest.raises(ProtectionError, match="image_column"):
        craft(ds, "random")
    with pytest.raises(ProtectionError, match=r"image_column='nope'.*columns"):
        tiny_ds.map(protect(method="random", image_column="nope"), batched=True)
    with pytest.raises(ProtectionError, match=r"image_column='nope'.*columns"):
        craft(tiny_ds, "random", image_column="nope")


# -- labels ------------------------------------------------------------------------------------------------------
def test_classwise_noise_by_label_needs_a_label_column(make_ds):
    ds = make_ds(label_column=None)
    with pytest.raises(ProtectionError, match="label_column"):
        ds.map(protect(noise=classwise_noise()), batched=True)


def test_clusters_with_a_label_column_is_refused(tiny_ds):
    with pytest.raises(ProtectionError, match=r"clusters= applies to data without labels.*remove_columns"):
        craft(tiny_ds, "em", clusters=4, **EM_FAST)
    with pytest.raises(ProtectionError, match=r"clusters=1 must be an integer from 2"):
        craft(tiny_ds.remove_columns("label"), "em", clusters=1, **EM_FAST)


def test_named_label_column_that_does_not_exist(tiny_ds):
    with pytest.raises(ProtectionError, match=r"label_column='nope'.*columns"):
        tiny_ds.map(protect(noise=classwise_noise(), label_column="nope"), batched=True)
    with pytest.raises(ProtectionError, match=r"label_column='nope'.*columns"):
        craft(tiny_ds, "em", label_column="nope", **EM_FAST)


def test_label_out_of_range_for_classwise_noise(make_ds):
    labels = [i % 10 for i in range(20)]
    labels[11] = 12
    ds = make_ds(images=tiny_images(20), labels=labels, label_feature=Value("int64"))
    with pytest.raises(ProtectionError) as err:
        ds.map(protect(noise=classwise_noise()), batched=True, batch_size=8, with_indices=True)
    msg = str(err.value)
    assert "row 11" in msg and "'label'" in msg and "12" in msg and "out of range" in msg and "[0, 10)" in msg


def test_classwise_noise_for_other_class_names_is_refused(make_ds):
    from datasets import ClassLabel

    names = [f"c{k}" for k in range(10)]
    ds = make_ds(images=tiny_images(10), label_feature=ClassLabel(names=names))
    noise = craft(ds, "em", **EM_FAST)
    assert noise.config.class_names == names
    ds.map(protect(noise=noise), batched=True)                      # its own names: fine
    swapped = make_ds(images=tiny_images(10), label_feature=ClassLabel(names=names[::-1]))
    with pytest.raises(ProtectionError, match=r"names its classes \['c9'.*crafted for \['c0'"):
        swapped.map(protect(noise=noise), batched=True)


def test_negative_or_non_integer_label_in_craft(make_ds):
    labels = [i % 10 for i in range(20)]
    labels[6] = -1
    ds = make_ds(images=tiny_images(20), labels=labels, label_feature=Value("int64"))
    with pytest.raises(ProtectionError, match=r"'label', row 6.*-1.*negative"):
        craft(ds, "em", **EM_FAST)
    ds = make_ds(images=tiny_images(20), labels=[str(i % 10) for i in range(20)], label_feature=Value("string"))
    with pytest.raises(ProtectionError, match=r"'label', row 0.*not an integer.*class_encode_column"):
        craft(ds, "em", **EM_FAST)


def test_label_out_of_range_for_per_batch_em(make_ds, batch_options):
    labels = [i % 10 for i in range(12)]
    labels[3] = 10                      # the surrogate has 10 classes
    ds = make_ds(images=tiny_images(12), labels=labels, label_feature=Value("int64"))
    with pytest.raises(ProtectionError, match=r"row 3.*out of range"):
        ds.map(protect(method="em", **batch_options("em")), batched=True, with_indices=True)


def test_em_needs_two_classes(make_ds):
    ds = make_ds(images=tiny_images(8), labels=[3] * 8)
    with pytest.raises(ProtectionError, match="two classes"):
        craft(ds, "em", **EM_FAST)


# -- epsilon -----------------------------------------------------------------------------------------------------
BAD_EPSILONS = [
    pytest.param(0, "positive", id="zero"),
    pytest.param(-8 / 255, "positive", id="negative"),
    pytest.param(8, "8/255", id="0-255-units"),
    pytest.param(1.0, "1/255", id="one"),
    pytest.param(0.5 / 255, "1/255", id="below-one-level"),
    pytest.param(100 / 255, "64/255", id="too-large"),
    pytest.param(float("nan"), "positive", id="nan"),
    pytest.param("eight", "not a number", id="string"),
]


@pytest.mark.parametrize("epsilon,hint", BAD_EPSILONS)
def test_bad_epsilon_in_protect(epsilon, hint):
    with pytest.raises(ProtectionError) as err:
        protect(method="random", epsilon=epsilon)
    assert "epsilon" in str(err.value) and hint in str(err.value)


@pytest.mark.parametrize("epsilon,hint", BAD_EPSILONS)
def test_bad_epsilon_in_craft(tiny_ds, epsilon, hint):
    for method in sorted(m for m, cls in METHODS.items() if cls.norm == "linf"):     # the others are not crafted
        with pytest.raises(ProtectionError) as err:
            craft(tiny_ds, method, epsilon=epsilon)
        assert "epsilon" in str(err.value) and hint in str(err.value)


def test_epsilon_8_suggests_8_over_255():
    with pytest.raises(ProtectionError, match=r"did you mean 8/255"):
        protect(method="random", epsilon=8)


def test_noise_epsilon_smaller_than_noise_budget():
    with pytest.raises(ProtectionError, match="epsilon.*smaller than the noise"):
        protect(noise=classwise_noise(), epsilon=4 / 255)
    protect(noise=classwise_noise(), epsilon=8 / 255)   # equal budgets are fine


# -- empty data --------------------------------------------------------------------------------------------------
def test_empty_dataset(tiny_ds):
    empty = tiny_ds.select([])
    for method in sorted(m for m, cls in METHODS.items() if cls.norm == "linf"):      # the others are not crafted
        with pytest.raises(ProtectionError, match="empty"):
            craft(empty, method, **FAST_OPTIONS.get(method, {}))
    with pytest.raises(ProtectionError, match="empty"):
        evaluate(empty, tiny_ds, epochs=1, progress=False)
    with pytest.raises(ProtectionError, match="empty"):
        evaluate(tiny_ds, empty, epochs=1, progress=False)
    # mapping an empty dataset is not an error: nothing to do
    assert empty.map(protect(method="random"), batched=True).num_rows == 0


def test_not_a_dataset():
    with pytest.raises(ProtectionError, match="datasets.Dataset"):
        craft([1, 2, 3], "random")


# -- methods and options -----------------------------------------------------------------------------------------
def test_unknown_method_lists_available(tiny_ds):
    for call in (lambda: protect(method="nope"), lambda: craft(tiny_ds, "nope")):
        with pytest.raises(ProtectionError) as err:
            call()
        msg = str(err.value)
        assert "'nope'" in msg and all(name in msg for name in METHODS)


def test_unknown_option_lists_known(tiny_ds):
    with pytest.raises(ProtectionError) as err:
        protect(method="random", stepz=3)
    assert "stepz" in str(err.value) and "epsilon" in str(err.value) and "seed" in str(err.value)
    with pytest.raises(ProtectionError) as err:
        craft(tiny_ds, "em", stepz=3)
    assert "stepz" in str(err.value) and "steps" in str(err.value) and "mode" in str(err.value)
    with pytest.raises(ProtectionError, match="options.*noise"):
        protect(noise=classwise_noise(), steps=3)


@pytest.mark.parametrize("options,name", [
    (dict(mode="pixelwise"), "mode"),
    (dict(steps=0), "steps"),
    (dict(batch_size=-1), "batch_size"),
    (dict(min_iters=5, max_iters=2), "min_iters"),
    (dict(subset=0.0), "subset"),
    (dict(step_size=16 / 255), "step_size"),
    (dict(seed="zero"), "seed"),
    (dict(random_start="False"), "random_start.*True or False"),   # a string never switches an option on
    (dict(steps=True), "steps"),
    (dict(step_size="0.01"), "step_size.*number"),
    (dict(lr=-1), "lr"),
])
def test_bad_option_values_name_the_option(tiny_ds, options, name):
    with pytest.raises(ProtectionError, match=name):
        protect(method="em", **options)
    with pytest.raises(ProtectionError, match=name):
        craft(tiny_ds, "em", **options)


def test_both_or_neither_of_method_and_noise():
    for kwargs in ({}, {"method": "random", "noise": classwise_noise()}):
        with pytest.raises(ProtectionError) as err:
            protect(**kwargs)
        assert "method=" in str(err.value) and "noise=" in str(err.value)
    with pytest.raises(ProtectionError, match="noise= must be a Noise"):
        protect(noise="some/path")


def test_per_batch_only_methods_explain_craft():
    """A method without a per-batch form tells the user to craft() first."""
    from hf_unlearnable.methods.base import Method

    with pytest.raises(ProtectionError, match=r"craft\(ds, 'base-test'\).*protect\(noise=noise\)"):
        type("Dummy", (Method,), {"name": "base-test", "per_batch": False})().perturb(
            np.zeros((1, 4, 4, 3), np.uint8), None, ["a"])


# -- sample-wise noise on unknown rows ---------------------------------------------------------------------------
def test_samplewise_noise_unknown_row_is_named(make_ds):
    ds = make_ds(images=tiny_images(12))
    noise = craft(ds, "random")
    images = tiny_images(12)
    images[9] = images[9].copy()
    images[9][5, 5, 0] ^= 1                      # one pixel differs: another image, so another id
    other = make_ds(images=images)
    with pytest.raises(ProtectionError) as err:
        other.map(protect(noise=noise), batched=True, batch_size=4, with_indices=True)
    msg = str(err.value)
    assert "row 9" in msg and "id" in msg and "no noise" in msg and "craft" in msg


def test_samplewise_noise_with_id_column(make_ds):
    ds = make_ds(images=tiny_images(6)).add_column("id", [f"img-{i}" for i in range(6)])
    noise = craft(ds, "random")
    assert noise.ids == [f"img-{i}" for i in range(6)]
    renamed = ds.remove_columns("id").add_column("id", [f"img-{i}" for i in (0, 1, 2, 3, 4, 99)])
    with pytest.raises(ProtectionError, match=r"row 5 \(id 'img-99'\)"):
        renamed.map(protect(noise=noise), batched=True, with_indices=True)


def test_two_classlabel_columns_say_several(make_ds):
    from datasets import ClassLabel

    ds = make_ds(images=tiny_images(4), labels=[0, 1, 0, 1], label_column="a", label_feature=ClassLabel(num_classes=2))
    ds = ds.add_column("b", [1, 0, 1, 0]).cast_column("b", ClassLabel(num_classes=2))
    with pytest.raises(ProtectionError, match=r"several columns could hold the labels \(\['a', 'b'\]"):
        craft(ds, "em", **EM_FAST)


@pytest.mark.parametrize("resolution", [4, 0, -32, 10**6, "32", 32.0, (32,), True])
def test_bad_resolution_names_the_option(tiny_ds, resolution):
    with pytest.raises(ProtectionError, match=r"resolution=.*side in pixels"):
        craft(tiny_ds, "random", resolution=resolution)
    with pytest.raises(ProtectionError, match=r"resolution=.*side in pixels"):
        protect(method="em", resolution=resolution)
    with pytest.raises(ProtectionError, match=r"resolution=.*side in pixels"):
        evaluate(tiny_ds, tiny_ds, resolution=resolution, epochs=1, progress=False)


# -- evaluate ----------------------------------------------------------------------------------------------------
def test_mix_below_one_without_clean(tiny_ds):
    with pytest.raises(ProtectionError) as err:
        evaluate(tiny_ds, tiny_ds, mix=[0.5], epochs=1, progress=False)
    assert "clean=" in str(err.value) and "mix" in str(err.value)


@pytest.mark.parametrize("ratio", [0.0, -0.5, 1.5])
def test_mix_ratio_out_of_range(tiny_ds, ratio):
    with pytest.raises(ProtectionError, match=r"mix ratio.*\(0, 1\]"):
        evaluate(tiny_ds, tiny_ds, clean=tiny_ds, mix=[ratio], epochs=1, progress=False)


def test_unknown_defence_lists_available(tiny_ds):
    with pytest.raises(ProtectionError) as err:
        evaluate(tiny_ds, tiny_ds, defences=["none", "blur9000"], epochs=1, progress=False)
    msg = str(err.value)
    assert "'blur9000'" in msg and "grayscale" in msg and "jpeg" in msg


def test_unknown_victim(tiny_ds):
    with pytest.raises(ProtectionError, match="architecture"):
        evaluate(tiny_ds, tiny_ds, victim="vit-giant", epochs=1, progress=False)


def test_clean_not_aligned_with_protected(tiny_ds):
    with pytest.raises(ProtectionError, match="rows"):
        evaluate(tiny_ds, tiny_ds, clean=tiny_ds.select(range(20)), mix=[0.5], epochs=1, progress=False)
    shuffled = tiny_ds.shuffle(seed=0)
    with pytest.raises(ProtectionError, match=r"row \d+: label differs"):
        evaluate(tiny_ds, tiny_ds, clean=shuffled, mix=[0.5], epochs=1, progress=False)


@pytest.mark.parametrize("method,options,name", [
    ("bayes", dict(sigma=True), "sigma"),
    ("bayes", dict(augment_draws=1.5), "augment_draws"),
    ("pue", dict(avgtimes=1.5), "avgtimes"),
])
def test_option_types_are_checked_for_every_method(method, options, name):
    with pytest.raises(ProtectionError, match=name):
        METHODS[method].config_class.from_options(method, **options)


def test_numpy_scalars_are_options_like_python_ones():
    import json

    cfg = METHODS["em"].config_class.from_options("em", steps=np.int64(5), random_start=np.bool_(True),
                                                   seed=np.int32(3))
    assert (cfg.steps, cfg.random_start, cfg.seed) == (5, True, 3)
    json.dumps(cfg.to_dict())                                    # the checkpoint and noise configs are JSON
    assert METHODS["bayes"].config_class.from_options("bayes", sigma=np.float32(0.5)).sigma == 0.5
    with pytest.raises(ProtectionError, match="seed=-1 must be an integer from 0"):
        METHODS["random"].config_class.from_options("random", seed=-1)


def test_clean_that_is_not_the_protected_rows_is_refused(tiny_ds, make_ds):
    other = make_ds(images=tiny_images(len(tiny_ds), seed=5))      # same labels, other images
    with pytest.raises(ProtectionError, match=r"clean= does not hold the rows.*first: row \d+"):
        evaluate(tiny_ds, tiny_ds, clean=other, mix=[0.5], epochs=1, progress=False)


def test_evaluate_arguments_of_the_wrong_kind(tiny_ds, make_ds):
    for kwargs, name in ((dict(epochs=0), "epochs"), (dict(epochs="a"), "epochs"), (dict(seed="x"), "seed"),
                         (dict(mix=["a"]), "mix"), (dict(victim={"train": {"epoch": 1}}), "TrainConfig"),
                         (dict(victim={"width": "8"}), "width")):
        with pytest.raises(ProtectionError, match=name):
            evaluate(tiny_ds, tiny_ds, progress=False, **{"epochs": 1, **kwargs})
    test = make_ds(images=tiny_images(4), labels=[0, 1, 2, 10], label_feature=Value("int64"))
    train = make_ds(images=tiny_images(8), label_feature=Value("int64"))
    with pytest.raises(ProtectionError, match=r"test row 3: label 10 .*training data does not have"):
        evaluate(train, test, epochs=1, progress=False)


def test_duplicate_or_missing_ids_in_an_id_column(make_ds):
    ds = make_ds(images=tiny_images(6))
    with pytest.raises(ProtectionError, match=r"column 'id': row 0 and row 2 share the id '0'"):
        craft(ds.add_column("id", [0, 1, 0, 1, 0, 1]), "random")
    with pytest.raises(ProtectionError, match=r"column 'id', row 0: the row id is None"):
        craft(ds.add_column("id", [None] * 6), "random")
    with pytest.raises(ProtectionError, match=r"column 'id': row 4 and row 5 share the id 'x'"):   # per batch too
        ds.add_column("id", ["a", "b", "c", "d", "x", "x"]).map(protect(method="random"), batched=True,
                                                                 with_indices=True)
    with pytest.raises(ProtectionError, match=r"column 'id', row 4: the row id is ''"):
        ds.add_column("id", ["a", "b", "c", "d", "", "f"]).map(protect(method="random"), batched=True,
                                                                with_indices=True)


def test_ids_that_key_nothing_are_not_checked(make_ds):
    """A repeated id column (a subject id, say) is fine where ids key nothing: class-wise noise and evaluate."""
    ds = make_ds(images=tiny_images(10)).add_column("id", ["same"] * 10)
    noise = craft(ds, "em", **EM_FAST)
    ds.map(protect(noise=noise), batched=True)
    evaluate(ds, ds, epochs=1, progress=False, victim={"arch": "convnet", "width": 8})


def test_features_are_respected_for_non_image_column(tiny_ds):
    ds = tiny_ds.cast(Features({**tiny_ds.features, "extra": Value("int32")}))
    assert ds.map(protect(method="random"), batched=True).features == ds.features


@pytest.mark.parametrize("largest", [10 ** 6, 2 ** 40, 7])
def test_plain_integer_labels_that_are_no_class_count_are_refused(largest):
    """Plain int labels (no ClassLabel) set the number of classes: 10**6 on 6 rows built a million-class surrogate,
    2**40 tried to allocate terabytes. Refused before anything is sized by them, naming the column and the fix."""
    import datasets

    ds = datasets.Dataset.from_dict({"image": [png_cell(a) for a in tiny_images(6)], "label": [0, 1, 2, 0, 1, largest]})
    ds = ds.cast_column("image", Image())
    with pytest.raises(ProtectionError, match=r"column 'label': its largest label is .*class_encode_column"):
        craft(ds, "em", mode="samplewise", max_iters=1, min_iters=1)
    with pytest.raises(ProtectionError, match="class_encode_column"):
        hf_unlearnable.train_surrogate(ds, epochs=1)


def test_one_pixel_images_are_never_released_unprotected():
    """1x1 images with a ResNet surrogate crafted noise that was exactly zero, released as if protected. Now the
    craft's noise is refused when empty, and a row it would leave unchanged is refused when applied."""
    from tests.conftest import build_dataset

    images = [np.random.default_rng(i).integers(0, 256, (1, 1, 3), dtype=np.uint8) for i in range(20)]
    ds = build_dataset(images, labels=[i % 10 for i in range(20)])
    for mode in ("samplewise", "classwise"):
        with pytest.raises(ProtectionError, match="unchanged|zero on every pixel|empty pattern"):
            noise = craft(ds, "em", mode=mode, surrogate_arch="resnet18", surrogate_width=8, max_iters=1,
                          min_iters=1, steps=1)
            ds.map(protect(noise=noise), batched=True)
