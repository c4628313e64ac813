"""The Gradio Space (hub_scripts/space/): its protection logic in-process, the page in a real headless Chromium
(the PyPI Playwright package driving Debian's /usr/bin/chromium; never `playwright install`), and its API through
gradio_client. Both network-facing tests run against one app process on 127.0.0.1.

Without Chromium, gradio or playwright the browser tests skip locally; with HF_UNLEARNABLE_REQUIRE_BROWSER=1 or
CI=true (as .ci/run sets) they fail instead, so a missing install step cannot pass silently.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

# Read at import by gradio / huggingface_hub: no analytics, no telemetry (the recipe's offline settings).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import pytest  # noqa: E402

from hf_unlearnable import Noise, ProtectionError, craft, protect  # noqa: E402
from hf_unlearnable.methods import METHODS  # noqa: E402
from tests.conftest import CLASS_NAMES, FAST_OPTIONS, build_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SPACE = ROOT / "hub_scripts" / "space"
CHROMIUM = os.environ.get("HF_UNLEARNABLE_CHROMIUM", "/usr/bin/chromium")
REQUIRE_BROWSER = (os.environ.get("HF_UNLEARNABLE_REQUIRE_BROWSER") == "1"
                   or os.environ.get("CI", "").lower() in ("1", "true"))
# Chromium without background traffic; the resolver rule makes every name but 127.0.0.1 unresolvable.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"]
SCREENSHOT = ROOT / "runs" / "space" / "screenshot.png"   # the latest run's; hub_scripts/space/ keeps a copy
LOCAL = re.compile(r"^(https?://127\.0\.0\.1(:\d+)?/|data:|blob:)")


def _need(module: str):
    """Import a browser-test dependency: skip without it, unless the browser tests are required."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if REQUIRE_BROWSER:
            pytest.fail(f"{module} is not installed but the browser tests are required ({exc}); "
                        "pip install -e '.[test]'")
        pytest.skip(f"{module} is not installed")


def _load_app():
    spec = importlib.util.spec_from_file_location("hf_unlearnable_space_app", SPACE / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module      # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def app():
    return _load_app()


@pytest.fixture(scope="module")
def bank_dir(tmp_path_factory) -> Path:
    """A tiny class-wise EM noise bank (32x32 patterns, 8/255, CIFAR-10 class names) saved as config + safetensors."""
    noise = craft(build_dataset(), "em", mode="classwise", **FAST_OPTIONS["em"])
    path = tmp_path_factory.mktemp("noise") / "em-cw-tiny"
    noise.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def catalogue(app, bank_dir):
    return app.build_catalogue([str(bank_dir)])


def _bank_key(catalogue) -> str:
    (key,) = [k for k, c in catalogue.choices.items() if c.noise is not None]
    return key


def _png(path: Path, arr: np.ndarray, **save) -> Path:
    PIL.Image.fromarray(arr).save(path, **({"format": "PNG"} | save))
    return path


def _read(path) -> np.ndarray:
    with PIL.Image.open(path) as im:
        assert im.format == "PNG", im.format
        return np.asarray(im.convert("RGB"))


def _png_header(width: int, height: int) -> bytes:
    """A truncated PNG (8-bit RGB): its header gives the size, its data holds one row and then the file ends. PIL
    reads the size; decoding it fails."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    z = zlib.compressobj()
    row = z.compress(bytes(1 + 3 * width)) + z.flush(zlib.Z_SYNC_FLUSH)     # one row, the stream left open
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", row)


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Random texture with saturated bands (0 and 255), so clipping at the pixel range is exercised."""
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    img[: h // 8] = 0
    img[-(h // 8):] = 255
    return img


def _cifar_cat(scale: int = 8) -> np.ndarray:
    """A real CIFAR-10 cat from the bundled slice, enlarged (nearest) so the page shows a recognisable picture."""
    from hf_unlearnable.data import load_cifar10

    train = load_cifar10("train")
    row = train[int(np.flatnonzero(np.asarray(train["label"]) == CLASS_NAMES.index("cat"))[0])]
    img = np.asarray(row["img"].convert("RGB"))
    return np.repeat(np.repeat(img, scale, 0), scale, 1)


# ---------------------------------------------------------------------------------------------------------------
# In-process: what the page offers and what the Protect button computes
# ---------------------------------------------------------------------------------------------------------------
def test_catalogue_follows_the_registry(catalogue):
    for name, cls in METHODS.items():
        if not cls.per_batch:
            assert name not in catalogue.choices       # dataset-level only (pue): offered through noise banks
        elif name not in catalogue.choices:             # e.g. bayes needs two classes in one batch
            assert any(f"method {name!r} is not offered" in p for p in catalogue.problems), catalogue.problems
    assert {"random", "em"} <= set(catalogue.choices)
    em, rnd = catalogue.choices["em"], catalogue.choices["random"]
    from hf_unlearnable.surrogates import load_surrogate

    assert em.class_names == load_surrogate(None).config.class_names and em.uses_network
    assert rnd.class_names is None and not rnd.uses_network
    bank = catalogue.choices[_bank_key(catalogue)]
    assert bank.class_names == CLASS_NAMES and bank.fixed_epsilon == 8 and not bank.uses_network


def test_unusable_noise_banks_are_reported_not_offered(app, tmp_path):
    rng = np.random.default_rng(0)
    samplewise = Noise.from_deltas(rng.uniform(-8 / 255, 8 / 255, (3, 32, 32, 3)), ids=["a", "b", "c"],
                                   epsilon=8 / 255, method="em", kind="samplewise")
    samplewise.save_pretrained(tmp_path / "sw")
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "noise.pt").write_bytes(b"\x80\x04not really a pickle")
    specs = [str(tmp_path / "sw"), str(tmp_path / "pickled"), str(tmp_path / "missing")]
    cat = app.build_catalogue(specs)
    assert all(c.noise is None for c in cat.choices.values())
    assert len([p for p in cat.problems if p.startswith("noise bank")]) == 3
    assert any("samplewise" in p and "class-wise" in p for p in cat.problems)
    assert any("pickle" in p for p in cat.problems)
    assert app.noise_specs_from_env(" a/b, ./noise/x\nuser/em ,, ") == ["a/b", "./noise/x", "user/em"]


def _nearest(pattern: np.ndarray, h: int, w: int) -> np.ndarray:
    """A crafted-size pattern brought to HxW as the library documents it: nearest neighbour ('nearest-exact': output
    row r copies input row floor((r + 0.5) * ph / h)), so every value is one of the pattern's whole steps."""
    ph, pw = pattern.shape[:2]
    rows = np.minimum(((np.arange(h) + 0.5) * ph / h).astype(int), ph - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * pw / w).astype(int), pw - 1)
    return pattern.astype(np.int16)[rows][:, cols]


def _library(transform, image: np.ndarray, label: int | None = None) -> bytes:
    batch = {"image": [image]} | ({"label": [label]} if label is not None else {})
    return transform(batch)["image"][0]["bytes"]


def test_the_whole_picture_goes_through_one_library_call(app, catalogue):
    """No tiles: the Space's PNG is, byte for byte, what protect(...) makes of the whole picture as one row."""
    img = _texture(700, 1100)
    png = app.protect_png(img, catalogue.choices["random"], None, 6)
    assert png == _library(protect(method="random", epsilon=6 / 255, seed=0, image_column="image"), img)
    out = app.decode_png(png)
    assert out.shape == img.shape and app.linf_steps(img, out) == 6
    assert catalogue.choices["random"].resolution is None          # random works at the picture's own size
    # em, with the class as the row's label (the surrogate's class index)
    cat = _cifar_cat(scale=3)
    png = app.protect_png(cat, catalogue.choices["em"], "cat", 8)
    expected = _library(protect(method="em", epsilon=8 / 255, seed=0, image_column="image", label_column="label"),
                        cat, CLASS_NAMES.index("cat"))
    assert png == expected


def test_em_on_a_large_picture_protects_every_region_and_keeps_its_size(app, catalogue):
    em = catalogue.choices["em"]
    from hf_unlearnable.surrogates import load_surrogate

    assert em.uses_network and em.resolution == tuple(load_surrogate(None).config.image_size) == (32, 32)
    rng = np.random.default_rng(1)      # a smooth picture (an upscaled CIFAR-10 cat) with mild texture, 2 MP
    img = np.asarray(PIL.Image.fromarray(_cifar_cat(scale=1)).resize((1700, 1200), PIL.Image.Resampling.BICUBIC))
    img = np.clip(img.astype(np.int16) + rng.integers(-3, 4, img.shape), 0, 255).astype(np.uint8)
    t0 = time.perf_counter()
    out = app.protect_array(img, em, "cat", 8)
    assert time.perf_counter() - t0 < 60           # crafted at 32x32 (~1 s here); 32x32 tiles took ~50 s at 2 MP
    assert out.shape == img.shape and out.dtype == np.uint8
    delta = np.abs(out.astype(np.int16) - img.astype(np.int16))
    assert delta.max() == 8 and app.linf_steps(img, out) == 8
    changed = delta.max(axis=-1) > 0
    assert changed.mean() > 0.95, changed.mean()
    # every region of the picture gets noise, not only some: a 6x6 grid of regions, each mostly changed
    for band in np.array_split(changed, 6, axis=0):
        for region in np.array_split(band, 6, axis=1):
            assert region.mean() > 0.8, region.mean()


def test_a_bank_applies_to_a_picture_of_another_size(app, tmp_path):
    # A bank with strong patterns (whole steps in [-8, 8]) so that the resize is visible in every pixel.
    rng = np.random.default_rng(5)
    patterns = rng.integers(-8, 9, (10, 32, 32, 3)).astype(np.float64) / 255
    Noise.from_deltas(patterns, ids=None, epsilon=8 / 255, method="em", kind="classwise",
                      class_names=CLASS_NAMES).save_pretrained(tmp_path / "strong")
    (bank,) = [c for c in app.build_catalogue([str(tmp_path / "strong")]).choices.values() if c.noise is not None]
    assert bank.resolution == (32, 32) and "resized to your picture" in bank.description
    pattern = bank.noise.steps[CLASS_NAMES.index("dog")]
    img = np.full((1000, 800, 3), 128, dtype=np.uint8)           # mid-grey: nothing clips ...
    img[:100] = 255                                              # ... except here, where positive steps clip
    png = app.protect_png(img, bank, "dog", 8)
    out = app.decode_png(png)
    assert out.shape == img.shape
    delta = out.astype(np.int16) - img.astype(np.int16)
    assert np.abs(delta).max() == 8
    resized = _nearest(pattern, 1000, 800)
    np.testing.assert_array_equal(delta[100:], resized[100:])
    np.testing.assert_array_equal(delta[:100], np.minimum(resized[:100], 0))    # clipped at 255, still bounded
    # the bank's own class names apply: "dog" is the row's label, its index in the bank
    assert png == _library(protect(noise=bank.noise, image_column="image", label_column="label"), img,
                           CLASS_NAMES.index("dog"))
    # A victim that shrinks the picture to 32x32 (box filter) sees the crafted pattern again, up to block edges.
    shrunk = np.stack([np.asarray(PIL.Image.fromarray(resized[..., c].astype(np.float32)).resize(
        (32, 32), PIL.Image.Resampling.BOX)) for c in range(3)], axis=-1)
    assert np.abs(shrunk - pattern).mean() < 0.25 * np.abs(pattern).mean()
    # a picture smaller than the patterns works the same way
    small = app.protect_array(np.full((20, 24, 3), 128, dtype=np.uint8), bank, "dog", 8)
    np.testing.assert_array_equal(small.astype(np.int16) - 128, _nearest(pattern, 20, 24))


def test_a_label_agnostic_bank_needs_no_class(app, tmp_path):
    """Class-wise noise crafted without labels carries its clusters' centroids: the library picks the picture's
    nearest cluster, so the page asks for no class."""
    from hf_unlearnable._clusters import features

    rng = np.random.default_rng(2)
    dim = features(np.zeros((1, 32, 32, 3), dtype=np.uint8)).shape[1]
    Noise.from_deltas(rng.integers(-8, 9, (3, 32, 32, 3)) / 255, ids=None, epsilon=8 / 255, method="em",
                      kind="classwise", class_names=[f"cluster {j}" for j in range(3)],
                      clustering={"clusters": 3, "surrogate": "default"},
                      centroids=rng.normal(size=(3, dim)).astype(np.float32)).save_pretrained(tmp_path / "agnostic")
    (bank,) = [c for c in app.build_catalogue([str(tmp_path / "agnostic")]).choices.values() if c.noise is not None]
    assert bank.class_names is None and "no class to pick" in bank.description
    img = _texture(60, 90, seed=4)
    out = app.protect_array(img, bank, None, 8)
    assert out.shape == img.shape and 0 < app.linf_steps(img, out) <= 8


def test_size_limits_refuse_before_work(app, catalogue, tmp_path):
    limits = app.Limits(max_pixels=200 * 150, max_network_pixels=100 * 100)
    mid = _png(tmp_path / "mid.png", _texture(120, 160))     # 19,200 px: above the (optional) network limit only
    with pytest.raises(ProtectionError, match=r"= 19,200 pixels; this Space runs methods that use a network on up "
                                              r"to 10,000 pixels.*'random' or a class-wise noise bank"):
        app.read_image(mid, limits, uses_network=True)
    arr, _ = app.read_image(mid, limits, uses_network=False)
    assert arr.shape == (120, 160, 3)
    big = _png(tmp_path / "big.png", _texture(200, 160))     # 32,000 px: above any method's limit
    with pytest.raises(ProtectionError, match=r"160x200 = 32,000 pixels; this Space protects at most 30,000 pixels\. Downscale"):
        app.read_image(big, limits)
    # refused before decoding: a PNG whose header says 6001x4000 but holds no pixel data is refused for its size
    # (decoding it would fail with "cannot be decoded")
    (tmp_path / "header-only.png").write_bytes(_png_header(6001, 4000))
    (tmp_path / "small-header-only.png").write_bytes(_png_header(100, 80))
    with pytest.raises(ProtectionError, match="cannot be decoded"):
        app.read_image(tmp_path / "small-header-only.png", app.Limits())
    with pytest.raises(ProtectionError, match=r"6001x4000 = 24\.0 MP; this Space protects at most 24\.0 MP"):
        app.read_image(tmp_path / "header-only.png", app.Limits(), uses_network=True)
    # The defaults: em crafts at the network's input size, so it has the same 24 MP limit as every method
    # (a 12 MP photo fits, 6000x4000 too); the network limit never exceeds the general one.
    assert app.Limits().network_pixels == app.Limits().max_pixels == 24_000_000
    sys.modules["space_protection"]._check_size(4000, 3000, app.Limits(), uses_network=True)
    sys.modules["space_protection"]._check_size(6000, 4000, app.Limits(), uses_network=True)
    with pytest.raises(ProtectionError, match=r"6001x4000 = 24\.0 MP; this Space protects at most 24\.0 MP"):
        sys.modules["space_protection"]._check_size(6001, 4000, app.Limits(), uses_network=True)
    assert app.Limits(max_pixels=1000, max_network_pixels=5000).network_pixels == 1000
    # protect_array checks the limits too (the API can be called with any array)
    with pytest.raises(ProtectionError, match="network"):
        app.protect_array(_texture(120, 160), catalogue.choices["em"], "cat", 8, limits)
    # no minimum side any more: the network sees 32x32 whatever the picture, so a thin strip is protected too
    strip = _texture(4, 30, seed=2)
    for key, label in (("random", None), ("em", "cat")):
        out = app.protect_array(strip, catalogue.choices[key], label, 8)
        assert out.shape == strip.shape and 0 < app.linf_steps(strip, out) <= 8


def test_uploads_are_decoded_or_refused_clearly(app, tmp_path):
    limits = app.Limits()
    sixteen = tmp_path / "sixteen.png"
    PIL.Image.fromarray(np.full((20, 20), 40000, dtype=np.uint16)).save(sixteen)
    with pytest.raises(ProtectionError, match="8-bit"):
        app.read_image(sixteen, limits)
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ProtectionError, match="not an image"):
        app.read_image(tmp_path / "notes.txt", limits)
    whole = _png(tmp_path / "whole.png", _texture(64, 64)).read_bytes()
    (tmp_path / "cut.png").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ProtectionError, match="cannot be decoded"):
        app.read_image(tmp_path / "cut.png", limits)

    # The modes the library keeps come back as they are: RGBA keeps its alpha (a user uploading a cut-out expects a
    # cut-out back, not a picture flattened onto white), grey stays grey.
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:8, :, 3] = 255                               # top half opaque red, bottom half fully transparent
    arr, notes = app.read_image(_png(tmp_path / "rgba.png", rgba), limits)
    np.testing.assert_array_equal(arr, rgba)
    assert notes == []
    grey, notes = app.read_image(_png(tmp_path / "grey.png", np.full((16, 16), 77, dtype=np.uint8)), limits)
    assert grey.shape == (16, 16, 1) and (grey == 77).all() and notes == []
    la = np.stack([np.full((16, 16), 77, np.uint8), np.full((16, 16), 9, np.uint8)], axis=-1)
    arr, _ = app.read_image(_png(tmp_path / "la.png", la), limits)
    np.testing.assert_array_equal(arr, la)
    # The others are converted without loss to the nearest mode the library keeps, and the report says so.
    pal = PIL.Image.fromarray(rgba).quantize(4)
    pal.info["transparency"] = pal.getpixel((0, 15))
    pal.save(tmp_path / "pal.png", transparency=pal.getpixel((0, 15)))
    arr, notes = app.read_image(tmp_path / "pal.png", limits)
    assert arr.shape == (16, 16, 4) and (arr[8:, :, 3] == 0).all() and (arr[:8, :, 3] == 255).all()
    assert any("palette to RGBA" in n for n in notes)
    PIL.Image.fromarray(_texture(16, 16)).quantize(8).save(tmp_path / "pal_opaque.png")
    arr, notes = app.read_image(tmp_path / "pal_opaque.png", limits)
    assert arr.shape == (16, 16, 3) and any("palette to RGB " in n for n in notes)
    PIL.Image.fromarray(np.eye(16, dtype=bool)).save(tmp_path / "bits.png")
    arr, notes = app.read_image(tmp_path / "bits.png", limits)
    assert arr.shape == (16, 16, 1) and set(np.unique(arr)) == {0, 255} and any("1-bit" in n for n in notes)
    PIL.Image.fromarray(_texture(16, 16)).convert("CMYK").save(tmp_path / "cmyk.jpg")
    arr, notes = app.read_image(tmp_path / "cmyk.jpg", limits)
    assert arr.shape == (16, 16, 3) and any("CMYK to RGB" in n for n in notes)

    # a phone photo stored sideways with EXIF orientation 6 is protected the way the browser shows it (upright)
    exif = PIL.Image.Exif()
    exif[0x0112] = 6
    PIL.Image.fromarray(_texture(20, 40)).save(tmp_path / "sideways.jpg", exif=exif, quality=95)
    upright, notes = app.read_image(tmp_path / "sideways.jpg", limits)
    assert upright.shape == (40, 20, 3) and any("EXIF" in n for n in notes)


def test_protect_upload_writes_a_lossless_png_and_an_honest_report(app, catalogue, tmp_path):
    img = _texture(90, 70, seed=3)
    up = _png(tmp_path / "my photo!.png", img)
    bank = catalogue.choices[_bank_key(catalogue)]
    res = app.protect_upload(up, bank, "ship", 12, tmp_path)     # asks more than the bank's own 8/255
    out = _read(res.png_path)
    assert res.png_path.name == "my_photo_protected_em-class-wise-em-cw-tiny_eps8.png"
    # the download is the library's own PNG, byte for byte
    library = _library(protect(noise=bank.noise, image_column="image", label_column="label"), img,
                       CLASS_NAMES.index("ship"))
    assert res.png_path.read_bytes() == library
    measured = int(np.abs(out.astype(np.int16) - img.astype(np.int16)).max())
    assert measured == res.linf <= 8
    assert f"max|δ|={measured}/255" in res.report and "budget: ε=8/255" in res.report
    assert f"PSNR={res.psnr:.2f} dB" in res.report and "12/255 was asked for" in res.report
    assert "image: 70x90 px, RGB" in res.report
    assert "the bank's patterns were crafted at 32x32 and resized to 70x90 (nearest neighbour" in res.report
    assert _read(res.map_path).shape == img.shape
    with pytest.raises(ProtectionError, match="smaller than the noise's own budget"):
        app.protect_upload(up, bank, "ship", 4, tmp_path)       # the library refuses a smaller budget
    with pytest.raises(ProtectionError, match=r"not one of .*'airplane'"):
        app.protect_upload(up, catalogue.choices["em"], "unicorn", 8, tmp_path)
    with pytest.raises(ProtectionError, match="needs the class"):
        app.protect_upload(up, catalogue.choices["em"], None, 8, tmp_path)
    with pytest.raises(ProtectionError, match="whole number"):
        app.protect_upload(up, catalogue.choices["random"], None, 40, tmp_path)
    # the library's own refusals reach the user without its batch wording
    white = _png(tmp_path / "white.png", np.full((40, 40, 3), 255, dtype=np.uint8))
    positive = Noise.from_deltas(np.full((10, 32, 32, 3), 8 / 255), ids=None, epsilon=8 / 255, method="em",
                                 kind="classwise", class_names=CLASS_NAMES)
    positive.save_pretrained(tmp_path / "positive")
    (pos,) = [c for c in app.build_catalogue([str(tmp_path / "positive")]).choices.values() if c.noise is not None]
    with pytest.raises(ProtectionError, match=r"^the noise leaves this image unchanged"):
        app.protect_upload(white, pos, "cat", 8, tmp_path)


@pytest.mark.parametrize("key, norm", [("ar", "l2"), ("lsp", "l2"), ("ops", "l0")])
def test_methods_with_another_norm_use_their_own_budget(app, catalogue, tmp_path, key, norm):
    """ar, lsp (L2) and ops (L0) are offered with their default budget; the slider (L-inf) does not apply to them,
    and the report states their budget and what was measured in their norm."""
    from hf_unlearnable._norms import budget, describe, measure
    from hf_unlearnable.methods import METHODS

    choice = catalogue.choices[key]
    own = METHODS[key].config_class().epsilon
    assert choice.norm == norm and choice.budget == own and choice.class_names == CLASS_NAMES
    assert list(catalogue.choices).index(key) > list(catalogue.choices).index("random")     # after the L-inf ones
    assert "the ε slider does not apply" in choice.description
    img = _texture(90, 70, seed=5)
    up = _png(tmp_path / "photo.png", img)
    res = app.protect_upload(up, choice, "dog", 3, tmp_path)            # the slider's 3/255 is not used
    assert res.png_path.name == f"photo_protected_{key}_{norm}-{own:g}.png"
    library = _library(protect(method=key, image_column="image", label_column="label"), img,
                       CLASS_NAMES.index("dog"))
    assert res.png_path.read_bytes() == library                           # the library's own PNG, at seed 0
    diff = _read(res.png_path).astype(np.int16) - img.astype(np.int16)
    assert 0 < measure(norm, diff) <= budget(norm, own, img.shape)
    assert f"budget: {describe(norm, own)}, the method's own" in res.report
    assert ("L2=" if norm == "l2" else "changed pixels=") in res.report
    assert _read(res.map_path).shape == img.shape


def test_an_rgba_upload_comes_back_rgba_with_its_alpha(app, catalogue, tmp_path):
    rng = np.random.default_rng(8)
    rgba = np.concatenate([_texture(300, 500, seed=8), rng.integers(0, 256, (300, 500, 1), dtype=np.uint8)], -1)
    rgba[:, :100, 3] = 0                               # a fully transparent strip: kept transparent
    up = _png(tmp_path / "cutout.png", rgba)
    for key, label in (("em", "cat"), ("random", None), (_bank_key(catalogue), "cat")):
        res = app.protect_upload(up, catalogue.choices[key], label, 8, tmp_path)
        with PIL.Image.open(res.png_path) as im:
            assert im.mode == "RGBA" and im.size == (500, 300)
            out = np.asarray(im)
        np.testing.assert_array_equal(out[..., 3], rgba[..., 3])                     # alpha byte for byte
        delta = np.abs(out[..., :3].astype(np.int16) - rgba[..., :3].astype(np.int16))
        assert 0 < delta.max() <= 8 and res.linf == delta.max()
        assert "image: 500x300 px, RGBA (alpha kept as it was)" in res.report
        with PIL.Image.open(res.map_path) as m:
            assert m.mode == "RGB" and m.size == (500, 300)
    # grey stays grey
    grey = _texture(64, 48, seed=9)[..., 0]
    res = app.protect_upload(_png(tmp_path / "grey.png", grey), catalogue.choices["random"], None, 8, tmp_path)
    with PIL.Image.open(res.png_path) as im:
        assert im.mode == "L" and 0 < np.abs(np.asarray(im).astype(np.int16) - grey).max() <= 8
    with PIL.Image.open(res.map_path) as m:
        assert m.mode == "L"


def test_metrics(app):
    a = np.zeros((10, 10, 3), dtype=np.uint8)
    b = a.copy()
    assert app.psnr_db(a, b) == float("inf") and app.linf_steps(a, b) == 0
    b[0, 0, 0] = 3
    assert app.linf_steps(a, b) == 3
    assert app.psnr_db(a, b) == pytest.approx(10 * np.log10(255 ** 2 / (9 / 300)))
    m = app.noise_map(a, b, 3)
    assert m[0, 0, 0] == 255 and m[0, 0, 1] == 128 and m.dtype == np.uint8
    # alpha is never changed: it is left out of the measures (it would inflate the PSNR) and of the map
    a4 = np.concatenate([a, np.full((10, 10, 1), 255, np.uint8)], -1)
    b4 = np.concatenate([b, np.full((10, 10, 1), 255, np.uint8)], -1)
    assert app.psnr_db(a4, b4) == app.psnr_db(a, b) and app.linf_steps(a4, b4) == 3
    assert app.noise_map(a4, b4, 3).shape == (10, 10, 3)
    grey = np.zeros((10, 10, 1), np.uint8)
    assert app.noise_map(grey, grey + 1, 1).shape == (10, 10)


# ---------------------------------------------------------------------------------------------------------------
# The Space folder deploys as is
# ---------------------------------------------------------------------------------------------------------------
def _front_matter() -> dict:
    from huggingface_hub import SpaceCard

    return SpaceCard.load(SPACE / "README.md").data.to_dict()


def test_space_readme_front_matter_is_valid():
    meta = _front_matter()
    gradio = _need("gradio")
    assert meta["sdk"] == "gradio" and meta["sdk_version"] == gradio.__version__
    assert (SPACE / meta["app_file"]).is_file()
    assert 0 < len(meta["short_description"]) <= 60
    assert meta["suggested_hardware"] == "cpu-basic"
    assert meta["colorFrom"] in {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}
    assert meta["colorTo"] in {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}
    assert "hf_unlearnable" in meta["tags"] and meta["datasets"]
    body = (SPACE / "README.md").read_text()
    assert "screenshot.png" in body and (SPACE / "screenshot.png").is_file()


def test_space_requirements_install_the_library_dependencies():
    tomllib = pytest.importorskip("tomllib")       # Python 3.11+
    import torch
    from packaging.requirements import Requirement

    def key(req: Requirement) -> str:
        return req.name.lower().replace("_", "-")

    deps = [Requirement(d) for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]
    lines = [ln.split("#")[0].strip() for ln in (SPACE / "requirements.txt").read_text().splitlines()]
    reqs = {key(Requirement(ln)): Requirement(ln) for ln in lines if ln and not ln.startswith("-")}
    for dep in deps:
        assert key(dep) in reqs, f"{dep} is a dependency of the library but missing from the Space's requirements"
        if key(dep) != "torch":
            assert reqs[key(dep)].specifier == dep.specifier, f"{reqs[key(dep)]} drifted from pyproject's {dep}"
    # the CPU build, pinned to the version the tests run on
    assert str(reqs["torch"].specifier) == f"=={torch.__version__.split('+')[0]}"
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines
    assert not {"torchvision", "timm"} & set(reqs)
    if "gradio" in reqs:                 # Spaces installs gradio==sdk_version itself; never a second version
        assert str(reqs["gradio"].specifier) == f"=={_front_matter()['sdk_version']}"


def test_deploy_to_a_space_and_run_from_its_download(bank_dir, tmp_path):
    """deploy.py against the loopback Hub: one commit with the Space files, the package and a noise bank in the
    card; the downloaded Space imports its own copy of the package and offers the bank, fetched from the Hub."""
    from huggingface_hub import HfApi, SpaceCard, snapshot_download

    from tests.conftest import HUB_SERVER, HUB_TOKENS

    spec = importlib.util.spec_from_file_location("hf_unlearnable_space_deploy", SPACE / "deploy.py")
    deploy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(deploy)
    token = HUB_TOKENS["alice"]
    api = HfApi(endpoint=HUB_SERVER.url, token=token)
    api.create_repo("alice/em-tiny-bank", exist_ok=True)
    api.upload_folder(repo_id="alice/em-tiny-bank", folder_path=str(bank_dir))
    deploy.deploy("alice/protect-a-picture", noise=["alice/em-tiny-bank"], token=token, endpoint=HUB_SERVER.url)

    files = set(api.list_repo_files("alice/protect-a-picture", repo_type="space"))
    assert {"README.md", "app.py", "space_catalogue.py", "space_protection.py", "requirements.txt", "screenshot.png",
            "hf_unlearnable/__init__.py",
            "hf_unlearnable/methods/em.py", "hf_unlearnable/surrogates/default/model.safetensors"} <= files
    assert not [f for f in files if f.endswith((".pyc", ".parquet")) or f.startswith("hub_scripts")]
    local = Path(snapshot_download("alice/protect-a-picture", repo_type="space", local_dir=tmp_path / "space",
                                   endpoint=HUB_SERVER.url, token=token))
    card = SpaceCard.load(local / "README.md").data.to_dict()
    assert card["models"] == ["alice/em-tiny-bank"] and card["sdk"] == "gradio"
    assert card["preload_from_hub"] == ["alice/em-tiny-bank config.json,noise.safetensors"]
    assert (local / "app.py").read_bytes() == (SPACE / "app.py").read_bytes()

    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_HUB_OFFLINE", "PYTHONPATH")}
    env.update(HF_ENDPOINT=HUB_SERVER.url, HF_HOME=str(tmp_path / "hf-home"), OMP_NUM_THREADS="1")
    script = ("import pathlib, app, hf_unlearnable\n"
              "assert pathlib.Path(hf_unlearnable.__file__).parent == pathlib.Path.cwd() / 'hf_unlearnable', "
              "hf_unlearnable.__file__\n"
              "cat = app.build_catalogue(app.noise_specs_from_readme('README.md'))\n"
              "print(sorted(cat.choices))\n")
    run = subprocess.run([sys.executable, "-c", script], cwd=local, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert "'em class-wise: alice/em-tiny-bank'" in run.stdout and "'random'" in run.stdout, run.stdout


# ---------------------------------------------------------------------------------------------------------------
# The page in a real browser, and the API through gradio_client
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def app_url(tmp_path_factory, bank_dir):
    """`python app.py --noise <bank>` on 127.0.0.1 (Gradio picks a free port; it is read from the log)."""
    _need("gradio")
    tmp = tmp_path_factory.mktemp("space")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "GRADIO_SERVER_PORT", "GRADIO_SERVER_NAME")}
    env.update(GRADIO_ANALYTICS_ENABLED="False", HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_OFFLINE="1",
               GRADIO_TEMP_DIR=str(tmp / "cache"), OMP_NUM_THREADS="1", NO_PROXY="127.0.0.1,localhost",
               PYTHONUNBUFFERED="1")
    log_path = tmp / "app.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, str(SPACE / "app.py"), "--noise", str(bank_dir)], cwd=tmp, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + 120
    url = None
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the Space app exited with {proc.returncode}:\n{log_path.read_text()}")
            found = re.search(r"Running on local URL:\s+(http://127\.0\.0\.1:\d+)", log_path.read_text())
            if found:
                url = found.group(1) + "/"
                try:
                    if opener.open(url, timeout=2).status == 200:
                        break
                except OSError:
                    pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Space app did not answer within 120 s:\n{log_path.read_text()}")
            time.sleep(0.25)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def browser_page(tmp_path):
    if not Path(CHROMIUM).exists():
        if REQUIRE_BROWSER:
            pytest.fail(f"Chromium is not installed at {CHROMIUM} but the browser tests are required: "
                        "apt-get install -y chromium")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    sync_api = _need("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            accept_downloads=True, viewport={"width": 1280, "height": 900})
        page = ctx.new_page()
        page.outside_requests = []
        page.on("request", lambda req: None if LOCAL.match(req.url) else page.outside_requests.append(req.url))
        try:
            yield page
        finally:
            ctx.close()


def test_browser_round_trip(app_url, browser_page, tmp_path):
    from playwright.sync_api import expect

    page = browser_page
    original = _cifar_cat()                       # 256x256, a real CIFAR-10 cat
    upload = _png(tmp_path / "cat.png", original)
    page.goto(app_url)
    expect(page.locator("#protect")).to_be_visible(timeout=30_000)
    page.locator("#inp input[type=file]").set_input_files(str(upload))
    expect(page.locator("#inp img")).to_be_visible()
    page.locator("#method input").click()
    page.locator("li[role=option][aria-label='em']").click()
    expect(page.locator("#method input")).to_have_value("em")
    expect(page.locator("#method-info")).to_contain_text("error-minimising")
    page.locator("#label input").click()
    page.locator("li[role=option][aria-label='cat']").click()
    expect(page.locator("#label input")).to_have_value("cat")
    slider = page.locator("#eps input[type=range]")
    slider.focus()
    for _ in range(3):
        slider.press("ArrowLeft")                 # 8 -> 5
    expect(page.locator("#eps input[type=number]")).to_have_value("5")
    page.locator("#protect").click()
    report = page.locator("#report textarea")
    expect(report).to_have_value(re.compile(r"max\|δ\|=\d+/255"), timeout=60_000)
    text = report.input_value()
    assert "method: em · class: cat" in text and "budget: ε=5/255" in text
    assert "image: 256x256 px, RGB" in text and "tiles" not in text
    assert "noise: the noise was made at 32x32 (the network's input size) and resized to 256x256" in text
    expect(page.locator("#protected img")).to_be_visible()
    expect(page.locator("#noise img")).to_be_visible()
    with page.expect_download() as download:
        page.locator("#dl a").first.click()
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    assert saved.name == "cat_protected_em_eps5.png"
    protected = _read(saved)
    assert protected.shape == original.shape
    measured = int(np.abs(protected.astype(np.int16) - original.astype(np.int16)).max())
    assert 0 < measured <= 5 and f"max|δ|={measured}/255" in text
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    with PIL.Image.open(SCREENSHOT) as shot:
        assert shot.width >= 1280 and shot.height >= 600
    assert page.outside_requests == [], f"the page reached outside 127.0.0.1: {page.outside_requests}"


def test_browser_shows_why_an_image_is_refused(app_url, browser_page, tmp_path):
    from playwright.sync_api import expect

    page = browser_page
    sixteen = tmp_path / "scan16.png"
    PIL.Image.fromarray(np.full((40, 40), 40000, dtype=np.uint16)).save(sixteen)   # a 16-bit greyscale scan
    page.goto(app_url)
    expect(page.locator("#protect")).to_be_visible(timeout=30_000)
    page.locator("#inp input[type=file]").set_input_files(str(sixteen))
    expect(page.locator("#inp img")).to_be_visible()
    page.locator("#protect").click()
    expect(page.locator(".toast-body")).to_contain_text("Export it as an 8-bit PNG or JPEG", timeout=30_000)
    expect(page.locator("#report textarea")).to_have_value("")
    assert page.outside_requests == [], f"the page reached outside 127.0.0.1: {page.outside_requests}"


def test_gradio_client_protects_with_a_noise_bank(app_url, catalogue, tmp_path):
    client_mod = _need("gradio_client")
    key = _bank_key(catalogue)
    img = _texture(100, 75, seed=7)                     # not the bank's 32x32: the library resizes the pattern
    upload = _png(tmp_path / "photo.png", img)
    client = client_mod.Client(app_url, download_files=str(tmp_path / "dl"), verbose=False)
    try:
        protected_path, map_path, text, file_path = client.predict(
            client_mod.handle_file(str(upload)), key, "frog", 8, api_name="/protect")
        out = _read(file_path)
        np.testing.assert_array_equal(out, _read(protected_path))
        pattern = catalogue.choices[key].noise.steps[CLASS_NAMES.index("frog")]
        expected = np.clip(img.astype(np.int16) + _nearest(pattern, 100, 75), 0, 255)
        np.testing.assert_array_equal(out, expected)
        measured = int(np.abs(out.astype(np.int16) - img.astype(np.int16)).max())
        assert f"max|δ|={measured}/255" in text and measured <= 8 and "class: frog" in text
        assert _read(map_path).shape == img.shape
        with pytest.raises(Exception, match="needs the class|is not one of"):
            client.predict(client_mod.handle_file(str(upload)), "em", "unicorn", 8, api_name="/protect")
    finally:
        client.close()


def test_screenshot_is_committed_beside_the_space():
    """The README shows hub_scripts/space/screenshot.png; refresh it from runs/space/ after a UI change."""
    committed = SPACE / "screenshot.png"
    assert committed.is_file()
    with PIL.Image.open(committed) as im:
        assert im.format == "PNG" and im.width >= 1280

