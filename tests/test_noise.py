"""Noise artefacts: safetensors round trip, config.json, pickle refusal, the budget check, atomic saves, row ids
(not positions), and quantisation (negative noise kept, rounding not truncation)."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import hf_unlearnable
from hf_unlearnable import Noise, ProtectionError, craft, load_noise, protect
from hf_unlearnable._images import add_steps, epsilon_levels, fit_steps
from hf_unlearnable.noise import CONFIG_NAME, WEIGHTS_NAME, NoiseConfig
from tests.conftest import CLASS_NAMES, FAST_OPTIONS, stored_arrays, tiny_images

EM_FAST = FAST_OPTIONS["em"]


def make_noise(kind: str, steps: np.ndarray, *, ids=None, epsilon: float = 8 / 255, **cfg) -> Noise:
    config = NoiseConfig(method="test", kind=kind, epsilon=epsilon, image_shape=list(steps.shape[1:]), **cfg)
    return Noise(steps.astype(np.int8), config, ids)


def constant_dataset(make_ds, values, labels=None):
    images = [np.full((32, 32, 3), v, dtype=np.uint8) for v in values]
    return make_ds(images=images, labels=labels if labels is not None else [0] * len(values))


# -- save / load ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def crafted():
    from tests.conftest import build_dataset

    ds = build_dataset()
    return {"classwise": craft(ds, "em", mode="classwise", seed=3, **EM_FAST),
            "samplewise": craft(ds, "em", mode="samplewise", seed=3, **EM_FAST),
            "random": craft(ds, "random", seed=3, epsilon=4 / 255)}


@pytest.mark.parametrize("which", ["classwise", "samplewise", "random"])
def test_save_load_round_trip(crafted, which, tmp_path, tiny_ds):
    noise = crafted[which]
    path = noise.save_pretrained(tmp_path / "noise")
    assert sorted(os.listdir(path)) == [CONFIG_NAME, WEIGHTS_NAME]
    loaded = load_noise(path)
    assert isinstance(loaded, Noise)
    np.testing.assert_array_equal(loaded.steps, noise.steps)
    assert loaded.steps.dtype == np.int8
    assert loaded.ids == noise.ids
    assert loaded.kind == noise.kind and loaded.method == noise.method and loaded.epsilon == noise.epsilon
    assert loaded.config == noise.config
    # the loaded noise protects exactly as the original
    a = tiny_ds.map(protect(noise=noise), batched=True)
    b = tiny_ds.map(protect(noise=loaded), batched=True)
    assert [x.tobytes() for x in stored_arrays(a)] == [x.tobytes() for x in stored_arrays(b)]


def test_config_json_fields(crafted, tmp_path):
    cfg = json.loads((crafted["classwise"].save_pretrained(tmp_path / "cw") / CONFIG_NAME).read_text())
    assert cfg["method"] == "em" and cfg["kind"] == "classwise"
    assert cfg["epsilon"] == pytest.approx(8 / 255) and cfg["epsilon_255"] == "8/255"
    assert cfg["image_shape"] == [32, 32, 3]
    assert cfg["class_names"] == CLASS_NAMES and cfg["num_classes"] == 10
    assert cfg["library_version"] == hf_unlearnable.__version__
    assert cfg["seed"] == 3 and cfg["method_config"]["mode"] == "classwise"
    assert cfg["source"]["image_column"] == "img" and cfg["source"]["label_column"] == "label"
    assert cfg["stats"]["rounds"] == 1
    cfg = json.loads((crafted["random"].save_pretrained(tmp_path / "rnd") / CONFIG_NAME).read_text())
    assert cfg["kind"] == "samplewise" and cfg["epsilon_255"] == "4/255" and cfg["num_rows"] == 40


def test_ids_preserved_exactly(tmp_path):
    ids = ["a", "é-ünïcode", "x" * 40, "0", "row with spaces"]
    steps = np.arange(5 * 2 * 2 * 3).reshape(5, 2, 2, 3) % 17 - 8
    noise = make_noise("samplewise", steps, ids=ids)
    loaded = load_noise(noise.save_pretrained(tmp_path / "n"))
    assert loaded.ids == ids
    np.testing.assert_array_equal(loaded.steps, noise.steps)


def test_overwrite_existing_directory(tmp_path):
    first = make_noise("classwise", np.full((2, 4, 4, 3), 1))
    second = make_noise("classwise", np.full((3, 4, 4, 3), -2))
    first.save_pretrained(tmp_path / "n")
    second.save_pretrained(tmp_path / "n")
    np.testing.assert_array_equal(load_noise(tmp_path / "n").steps, second.steps)


# -- pickles are refused, never unpickled --------------------------------------------------------------------------
class _Booby:
    """Unpickling this creates a marker file: proof that something was unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("name", ["noise.pt", "noise.bin", "pytorch_model.bin", "noise.pkl"])
def test_pickle_files_are_refused_and_not_loaded(tmp_path, name):
    folder = tmp_path / "pickled"
    folder.mkdir()
    marker = tmp_path / "UNPICKLED"
    (folder / name).write_bytes(pickle.dumps(_Booby(marker)))
    with pytest.raises(ProtectionError) as err:
        load_noise(folder)
    assert "pickle" in str(err.value) and name in str(err.value) and WEIGHTS_NAME in str(err.value)
    (folder / CONFIG_NAME).write_text(json.dumps({"method": "x", "kind": "classwise", "epsilon": 8 / 255,
                                                  "image_shape": [32, 32, 3]}))
    with pytest.raises(ProtectionError, match="pickle"):
        load_noise(folder)
    assert not marker.exists(), "a pickle file was unpickled"


def test_safetensors_preferred_and_pickle_beside_it_ignored(tmp_path):
    marker = tmp_path / "UNPICKLED"
    noise = make_noise("classwise", np.full((2, 4, 4, 3), 3))
    path = noise.save_pretrained(tmp_path / "n")
    (path / "noise.bin").write_bytes(pickle.dumps(_Booby(marker)))
    np.testing.assert_array_equal(load_noise(path).steps, noise.steps)
    assert not marker.exists()


def test_missing_files(tmp_path):
    with pytest.raises(ProtectionError, match="not a directory"):
        load_noise(tmp_path / "does-not-exist")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ProtectionError, match=WEIGHTS_NAME):
        load_noise(tmp_path / "empty")
    path = make_noise("classwise", np.zeros((2, 4, 4, 3))).save_pretrained(tmp_path / "n")
    (path / CONFIG_NAME).unlink()
    with pytest.raises(ProtectionError, match=CONFIG_NAME):
        load_noise(path)


@pytest.mark.parametrize("damage,message", [
    (lambda d: (d / CONFIG_NAME).write_text("{not json"), "not valid JSON"),
    (lambda d: (d / CONFIG_NAME).write_text("[1, 2]"), "not a JSON object"),
    (lambda d: (d / WEIGHTS_NAME).write_bytes(b"garbage"), "cannot be read.*damaged"),
    (lambda d: _edit_config(d, epsilon=None), "damaged"),
    (lambda d: _edit_config(d, image_shape=None), "damaged"),
    (lambda d: __import__("safetensors.numpy").numpy.save_file({"x": np.zeros(1)}, str(d / WEIGHTS_NAME)),
     r"no tensor\(s\) \['steps'\]"),
])
def test_damaged_folder_is_a_clear_error(tmp_path, damage, message):
    path = make_noise("classwise", np.zeros((2, 4, 4, 3))).save_pretrained(tmp_path / "n")
    damage(path)
    with pytest.raises(ProtectionError, match=message):
        load_noise(path)


def _edit_config(folder, **changes):
    cfg = json.loads((folder / CONFIG_NAME).read_text())
    cfg.update(changes)
    (folder / CONFIG_NAME).write_text(json.dumps(cfg))


def test_a_mistyped_local_path_offline_is_not_blamed_on_the_hub(tmp_path, monkeypatch):
    """Offline, a path that is neither a folder here nor in the Hub cache: the error says so (it used to say the
    repo had no config.json)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ProtectionError, match="not a local folder, not in the local Hub cache"):
        load_noise("noise/em-cw", cache_dir=str(tmp_path / "cache"))


# -- the budget check --------------------------------------------------------------------------------------------
def test_steps_beyond_epsilon_rejected():
    with pytest.raises(ProtectionError, match="budget"):
        make_noise("classwise", np.full((2, 4, 4, 3), 9))
    with pytest.raises(ProtectionError, match="budget"):
        make_noise("classwise", np.full((2, 4, 4, 3), -5), epsilon=4 / 255)
    make_noise("classwise", np.full((2, 4, 4, 3), -4), epsilon=4 / 255)      # on the edge: fine


def test_edited_file_beyond_budget_rejected_on_load(tmp_path):
    from safetensors.numpy import load_file, save_file

    path = make_noise("classwise", np.full((2, 4, 4, 3), 2)).save_pretrained(tmp_path / "n")
    tensors = load_file(str(path / WEIGHTS_NAME))
    tensors["steps"][0, 0, 0, 0] = 20
    save_file(tensors, str(path / WEIGHTS_NAME))
    with pytest.raises(ProtectionError, match="budget"):
        load_noise(path)
    cfg = json.loads((path / CONFIG_NAME).read_text())
    cfg["epsilon"] = 8.0
    (path / CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(ProtectionError, match="epsilon"):
        load_noise(path)


def test_from_deltas_clips_to_budget():
    deltas = np.full((1, 4, 4, 3), 20 / 255, dtype=np.float32)
    noise = Noise.from_deltas(deltas, ids=["a"], epsilon=8 / 255, method="test")
    assert noise.steps.max() == 8


def test_malformed_noise_rejected():
    with pytest.raises(ProtectionError, match="int8"):
        Noise(np.zeros((2, 4, 4, 3), np.float32), NoiseConfig("t", "classwise", 8 / 255, [4, 4, 3]))
    with pytest.raises(ProtectionError, match="shape"):
        Noise(np.zeros((2, 4, 4, 3), np.int8), NoiseConfig("t", "classwise", 8 / 255, [8, 8, 3]))
    with pytest.raises(ProtectionError, match="one id per row"):
        make_noise("samplewise", np.zeros((2, 4, 4, 3)), ids=["a"])
    with pytest.raises(ProtectionError, match="duplicate"):
        make_noise("samplewise", np.zeros((2, 4, 4, 3)), ids=["a", "a"])
    with pytest.raises(ProtectionError, match="kind"):
        NoiseConfig("t", "pixelwise", 8 / 255, [4, 4, 3])


# -- atomic save -------------------------------------------------------------------------------------------------
def test_save_leaves_no_temporary_directories(tmp_path):
    noise = make_noise("classwise", np.full((2, 4, 4, 3), 1))
    noise.save_pretrained(tmp_path / "n")
    noise.save_pretrained(tmp_path / "n")          # overwrite
    assert sorted(os.listdir(tmp_path)) == ["n"]
    # the modes a plain write gets under the umask (mkdtemp and safetensors make 0700 / 0600)
    from hf_unlearnable._atomic import _UMASK

    assert os.stat(tmp_path / "n").st_mode & 0o777 == 0o777 & ~_UMASK
    assert {os.stat(f).st_mode & 0o777 for f in (tmp_path / "n").iterdir()} == {0o666 & ~_UMASK}


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    import safetensors.numpy

    noise = make_noise("classwise", np.full((2, 4, 4, 3), 1))

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        noise.save_pretrained(tmp_path / "n")
    assert os.listdir(tmp_path) == []


def test_failed_overwrite_keeps_old_files(tmp_path, monkeypatch):
    import safetensors.numpy

    old = make_noise("classwise", np.full((2, 4, 4, 3), 1))
    old.save_pretrained(tmp_path / "n")
    monkeypatch.setattr(safetensors.numpy, "save_file", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        make_noise("classwise", np.full((2, 4, 4, 3), 5)).save_pretrained(tmp_path / "n")
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["n"]
    np.testing.assert_array_equal(load_noise(tmp_path / "n").steps, old.steps)


def test_failed_swap_of_whole_folders_puts_the_old_one_back(tmp_path, monkeypatch):
    """Where folders cannot be exchanged in one step (not Linux), the last of the two renames (the new folder onto
    the target) fails: the old folder is back at the target and no hidden folder is left."""
    from hf_unlearnable import _atomic

    old = make_noise("classwise", np.full((2, 4, 4, 3), 1))
    old.save_pretrained(tmp_path / "n")
    real = os.replace

    def replace(src, dst):
        if str(src).startswith(str(tmp_path / ".n.tmp-")):
            raise OSError("device busy")
        return real(src, dst)

    monkeypatch.setattr(_atomic, "_exchange", lambda a, b: False)
    monkeypatch.setattr(_atomic.os, "replace", replace)
    with pytest.raises(OSError, match="device busy"):
        make_noise("classwise", np.full((2, 4, 4, 3), 5)).save_pretrained(tmp_path / "n")
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["n"]
    np.testing.assert_array_equal(load_noise(tmp_path / "n").steps, old.steps)


# -- row ids, not positions (methods.md pitfall 6) -----------------------------------------------------------------
def test_samplewise_noise_follows_rows_after_shuffle(tiny_ds, crafted):
    for noise in (crafted["samplewise"], craft(tiny_ds, "random", seed=7)):
        assert noise.kind == "samplewise" and len(noise.ids) == tiny_ds.num_rows
        straight = tiny_ds.map(protect(noise=noise), batched=True)
        shuffled = tiny_ds.shuffle(seed=11)
        assert shuffled["extra"] != tiny_ds["extra"]
        protected = shuffled.map(protect(noise=noise), batched=True, batch_size=7)
        by_extra = dict(zip(straight["extra"], stored_arrays(straight)))
        for extra, arr in zip(protected["extra"], stored_arrays(protected)):
            np.testing.assert_array_equal(arr, by_extra[extra])
        # a subset (another length, other positions) works too
        subset = tiny_ds.select([39, 2, 17]).map(protect(noise=noise), batched=True)
        for extra, arr in zip(subset["extra"], stored_arrays(subset)):
            np.testing.assert_array_equal(arr, by_extra[extra])


def test_each_row_gets_its_own_samplewise_noise(tiny_ds):
    noise = craft(tiny_ds, "random", seed=0)
    out = tiny_ds.map(protect(noise=noise), batched=True)
    deltas = [a.astype(np.int16) - b.astype(np.int16) for a, b in zip(stored_arrays(out), stored_arrays(tiny_ds))]
    assert len({d.tobytes() for d in deltas}) == len(deltas)


def test_classwise_noise_follows_labels(make_ds):
    steps = np.stack([np.full((32, 32, 3), v) for v in (-3, 0, 2, 5, -8, 1, 1, 1, 1, 1)])
    noise = make_noise("classwise", steps, num_classes=10)
    ds = constant_dataset(make_ds, [100] * 5, labels=[4, 0, 3, 2, 0])
    out = ds.map(protect(noise=noise), batched=True, batch_size=2)
    assert [int(a[0, 0, 0]) for a in stored_arrays(out)] == [92, 97, 105, 102, 97]


# -- quantisation: negative noise kept, rounding not truncation --------------------------------------------------
def test_negative_noise_is_kept(make_ds):
    """The EM clamp bug (noise.clamp(0, 255) before adding) would drop every negative step; here 100 - 3 = 97."""
    noise = make_noise("classwise", np.full((1, 32, 32, 3), -3), num_classes=1)
    ds = constant_dataset(make_ds, [100, 1, 255], labels=[0, 0, 0])
    out = stored_arrays(ds.map(protect(noise=noise), batched=True))
    assert (out[0] == 97).all()
    assert (out[1] == 0).all()            # clipped to the image range, after adding
    assert (out[2] == 252).all()


def test_positive_noise_clips_at_255(make_ds):
    noise = make_noise("classwise", np.full((1, 32, 32, 3), 3), num_classes=1)
    out = stored_arrays(constant_dataset(make_ds, [254, 100], labels=[0, 0]).map(protect(noise=noise), batched=True))
    assert (out[0] == 255).all() and (out[1] == 103).all()


def apply_delta(images: np.ndarray, delta: np.ndarray, epsilon: float) -> np.ndarray:
    """What the transform does to each row of a per-batch method's output (fit_steps, then add_steps)."""
    k = epsilon_levels(epsilon)
    return np.stack([add_steps(x, fit_steps(d, x.shape, k)) for x, d in zip(images, delta)])


@pytest.mark.parametrize("delta_255,expected", [(2.6, 3), (-2.6, -3), (2.4, 2), (-2.4, -2), (0.6, 1), (-0.6, -1),
                                                (7.7, 8), (-7.7, -8), (9.5, 8), (-30, -8)])
def test_rounding_not_truncation(delta_255, expected):
    x = np.full((1, 2, 2, 3), 100, dtype=np.uint8)
    out = apply_delta(x, np.full(x.shape, delta_255 / 255), 8 / 255)
    assert (out.astype(int) - 100 == expected).all()
    noise = Noise.from_deltas(np.full((1, 2, 2, 3), delta_255 / 255), ids=["a"], epsilon=8 / 255, method="t")
    assert (noise.steps == expected).all()


@settings(max_examples=100, deadline=None)
@given(x=hnp.arrays(np.uint8, (3, 4, 4, 3)),
       delta=hnp.arrays(np.float64, (3, 4, 4, 3), elements=st.floats(-0.2, 0.2, allow_nan=False)),
       k=st.integers(1, 16))
def test_apply_delta_property(x, delta, k):
    eps = k / 255
    assert epsilon_levels(eps) == k
    out = apply_delta(x, delta, eps)
    assert out.dtype == np.uint8
    diff = out.astype(np.int16) - x.astype(np.int16)
    assert np.abs(diff).max(initial=0) <= k
    expected = np.clip(x.astype(np.int16) + np.clip(np.rint(delta * 255), -k, k), 0, 255)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("k", range(1, 65))
def test_epsilon_levels_exact_for_every_k(k):
    assert epsilon_levels(k / 255) == k


def test_identical_images_share_one_samplewise_entry(make_ds):
    """Two rows with the same pixels have the same content id: one noise entry, and both get the same noise."""
    images = tiny_images(5)
    images.append(images[2].copy())
    ds = make_ds(images=images)
    noise = craft(ds, "random")
    assert len(noise) == 5 and len(set(noise.ids)) == 5
    out = stored_arrays(ds.map(protect(noise=noise), batched=True))
    np.testing.assert_array_equal(out[2], out[5])


def test_ids_ending_in_nul_survive_a_round_trip(tmp_path):
    """Ids are stored with their lengths: "a" and "a\\x00" are two rows, and both come back byte for byte."""
    ids = ["a", "a\x00", "\x00", "é\x00\x00", "b"]
    noise = Noise.from_deltas(np.full((5, 4, 4, 3), 3 / 255, dtype=np.float32), ids=ids, epsilon=8 / 255,
                              method="random", kind="samplewise", method_config={}, class_names=None, source={})
    noise.save_pretrained(tmp_path / "n")
    back = load_noise(tmp_path / "n")
    assert back.ids == ids
    np.testing.assert_array_equal(back.steps, noise.steps)


def test_damaged_id_lengths_are_refused(tmp_path):
    from safetensors.numpy import load_file, save_file

    noise = Noise.from_deltas(np.full((2, 4, 4, 3), 3 / 255, dtype=np.float32), ids=["x", "y"], epsilon=8 / 255,
                              method="random", kind="samplewise", method_config={}, class_names=None, source={})
    noise.save_pretrained(tmp_path / "n")
    tensors = load_file(str(tmp_path / "n" / "noise.safetensors"))
    tensors["id_lengths"] = np.array([1, 99], dtype=np.int64)
    save_file(tensors, str(tmp_path / "n" / "noise.safetensors"))
    with pytest.raises(ProtectionError, match="id_lengths"):
        load_noise(tmp_path / "n")
