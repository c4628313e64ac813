"""The invariant suite: every registered method, in every form it can be applied, keeps the transform's contracts.

Cases (see conftest.protection_cases): `protect(method=name)` per batch for every method with `per_batch = True`,
and `craft(ds, name, ...)` + `protect(noise=...)` for every method (each crafting mode for methods with modes).
A newly registered method is covered automatically.

Everything is checked on the bytes the output dataset *stores* (decoded here, not by datasets): L-inf budget after
uint8 quantisation, PNG (never JPEG, never a path), rows/columns/features/order kept, determinism, the input left
untouched, and that the noise is not a no-op.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

import hf_unlearnable.transform as transform_module
from hf_unlearnable import ProtectionError, craft, protect
from hf_unlearnable.methods import METHODS
from tests.conftest import (BATCH_COUPLED, PNG_SIGNATURE, build_dataset, deadline, decode_bytes, png_cell,
                            protect_with, stored_arrays, stored_cells, stored_digest, tiny_images, within_budget)

EPSILONS = [pytest.param(8 / 255, id="eps8"), pytest.param(4 / 255, id="eps4")]


def _levels(eps: float) -> int:
    return int(round(eps * 255))


# ---------------------------------------------------------------------------------------------------------------
# (a) + (e): inside the budget after quantisation, PNG, and not a no-op
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("epsilon", EPSILONS)
def test_stored_png_within_epsilon_and_changed(case, epsilon, tiny_ds, batch_options):
    out = protect_with(case, tiny_ds, epsilon=epsilon, batch_options=batch_options)
    before = stored_arrays(tiny_ds)
    cells = stored_cells(out)
    assert len(cells) == len(before)
    changed = 0
    for i, (cell, x) in enumerate(zip(cells, before)):
        assert cell["path"] is None, f"row {i}: output refers to a path instead of holding bytes"
        assert cell["bytes"].startswith(PNG_SIGNATURE), f"row {i}: output is not PNG ({cell['bytes'][:4]!r})"
        x_new = decode_bytes(cell["bytes"])
        assert x_new.dtype == np.uint8 and x_new.shape == x.shape
        ok, measured = within_budget(case, x, x_new, epsilon)
        assert ok, f"row {i}: over the budget ({measured})"
        changed += int((x_new != x).any())
    # (e) the noise really is applied: most rows change, not just one
    assert changed >= len(before) // 2, f"only {changed} of {len(before)} rows changed: is the method a no-op?"


def test_budget_is_used_up_to_epsilon(tiny_ds):
    """Uniform noise in the box reaches the budget's edge: the bound checked above is tight, not vacuous."""
    out = tiny_ds.map(protect(method="random", epsilon=4 / 255), batched=True)
    diffs = [np.abs(a.astype(np.int16) - b.astype(np.int16)) for a, b in zip(stored_arrays(out), stored_arrays(tiny_ds))]
    assert max(d.max() for d in diffs) == 4
    values = np.concatenate([d.ravel() for d in diffs])
    assert {0, 1, 2, 3, 4} <= set(np.unique(values).tolist())


# ---------------------------------------------------------------------------------------------------------------
# (b) rows, order, other columns and features kept
# ---------------------------------------------------------------------------------------------------------------
def test_rows_columns_order_and_features_preserved(case, tiny_ds, batch_options):
    out = protect_with(case, tiny_ds, batch_size=7, batch_options=batch_options)
    assert out.num_rows == tiny_ds.num_rows
    assert out.column_names == tiny_ds.column_names
    assert out.features == tiny_ds.features
    for col in ("label", "caption", "extra"):
        assert out[col] == tiny_ds[col], f"column {col!r} changed or was reordered"
    # the image of row i is still row i's image (nearer to it than to any other row, summed over pixels: an L0
    # method moves one pixel as far as it likes)
    before = np.stack(stored_arrays(tiny_ds)).astype(np.int32)
    after = np.stack(stored_arrays(out)).astype(np.int32)
    dist = np.abs(after[:, None] - before[None]).reshape(len(after), len(before), -1).sum(-1)
    assert (dist.argmin(1) == np.arange(len(after))).all()


def test_shuffled_input_keeps_its_order(case, tiny_ds, batch_options):
    """A dataset with an indices mapping (shuffle/select) comes back in its own order."""
    shuffled = tiny_ds.shuffle(seed=3)
    out = protect_with(case, shuffled, batch_options=batch_options)
    assert out["extra"] == shuffled["extra"]
    assert out["label"] == shuffled["label"]
    for x, y in zip(stored_arrays(shuffled), stored_arrays(out)):
        assert within_budget(case, x, y)[0]


# ---------------------------------------------------------------------------------------------------------------
# (c) determinism
# ---------------------------------------------------------------------------------------------------------------
def test_same_seed_same_bytes(case, tiny_ds, batch_options):
    """Two independent runs (crafting included) with the same seed give byte-identical datasets."""
    a = protect_with(case, tiny_ds, seed=5, batch_options=batch_options, fresh=True)
    b = protect_with(case, tiny_ds, seed=5, batch_options=batch_options, fresh=True)
    assert [c["bytes"] for c in stored_cells(a)] == [c["bytes"] for c in stored_cells(b)]


@pytest.mark.parametrize("form", ["per-batch", "craft"])
def test_random_seed_matters(form, tiny_ds):
    def run(seed):
        if form == "per-batch":
            t = protect(method="random", seed=seed)
        else:
            t = protect(noise=craft(tiny_ds, "random", seed=seed))
        return stored_digest(tiny_ds.map(t, batched=True, load_from_cache_file=False))

    assert run(0) == run(0)
    assert run(0) != run(1)


def test_per_batch_bytes_do_not_depend_on_batching(case, per_batch_only, tiny_ds, batch_options):
    assert set(BATCH_COUPLED) == {name for name, cls in METHODS.items() if cls.batch_coupled}
    if case.method in BATCH_COUPLED:
        pytest.skip(f"{case.method} is batch-coupled: {BATCH_COUPLED[case.method]}")
    ref = stored_digest(protect_with(case, tiny_ds, batch_size=7, batch_options=batch_options))
    assert stored_digest(protect_with(case, tiny_ds, batch_size=16, batch_options=batch_options)) == ref
    assert stored_digest(protect_with(case, tiny_ds, batch_size=1000, batch_options=batch_options)) == ref
    assert stored_digest(protect_with(case, tiny_ds, batch_size=16, num_proc=2, batch_options=batch_options)) == ref


def test_noise_bytes_do_not_depend_on_batching(tiny_ds):
    noise = craft(tiny_ds, "random", seed=2)
    ref = stored_digest(tiny_ds.map(protect(noise=noise), batched=True, batch_size=7))
    with deadline(180, "map(num_proc=2)"):
        assert stored_digest(tiny_ds.map(protect(noise=noise), batched=True, batch_size=16, num_proc=2)) == ref


def test_num_proc_after_torch_has_run_in_parent(tiny_ds, batch_options):
    """map(num_proc=2) of a torch-based method after torch ran in the parent (e.g. after crafting) must not hang:
    forked workers would deadlock in torch's OpenMP pool unless they run torch single-threaded."""
    import torch

    torch.nn.Conv2d(3, 8, 3)(torch.rand(64, 3, 32, 32)).sum().backward()  # warm the parent's thread pool
    t = protect(method="em", **batch_options("em"))
    one = stored_digest(tiny_ds.map(t, batched=True, batch_size=16))
    with deadline(180, "map(num_proc=2) after torch ran in the parent"):
        two = stored_digest(tiny_ds.map(t, batched=True, batch_size=16, num_proc=2))
    assert one == two


# ---------------------------------------------------------------------------------------------------------------
# (d) the input is never modified
# ---------------------------------------------------------------------------------------------------------------
def _file_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_input_dataset_not_modified(case, disk_ds, batch_options):
    fingerprint = disk_ds._fingerprint
    digest = stored_digest(disk_ds)
    files = {f["filename"]: _file_digest(f["filename"]) for f in disk_ds.cache_files}
    other = {c: disk_ds[c] for c in ("label", "caption", "extra")}
    out = protect_with(case, disk_ds, batch_options=batch_options)
    assert stored_digest(out) != digest
    assert disk_ds._fingerprint == fingerprint
    assert stored_digest(disk_ds) == digest
    assert {f["filename"]: _file_digest(f["filename"]) for f in disk_ds.cache_files} == files
    assert {c: disk_ds[c] for c in other} == other
    assert out._fingerprint != fingerprint


# ---------------------------------------------------------------------------------------------------------------
# Columns: found from the features, or named
# ---------------------------------------------------------------------------------------------------------------
def test_columns_found_from_features_with_unusual_names(make_ds):
    ds = make_ds(image_column="picture", label_column="y")
    noise = craft(ds, "random")
    out = ds.map(protect(method="random"), batched=True)
    assert out.column_names == ds.column_names and out["y"] == ds["y"]
    classwise = craft(ds, "em", mode="classwise", max_iters=1, min_iters=1, train_steps=1, surrogate_width=8)
    assert classwise.config.class_names == ds.features["y"].names
    out = ds.map(protect(noise=classwise), batched=True)       # the ClassLabel column 'y' is found, as in craft
    assert out["y"] == ds["y"]
    out = ds.map(protect(noise=noise, image_column="picture"), batched=True)
    assert stored_digest(out, "picture") != stored_digest(ds, "picture")


def test_explicit_columns(make_ds):
    from datasets import Image

    ds = make_ds()
    ds = ds.add_column("thumb", [png_cell(a) for a in tiny_images(len(ds), seed=9)], feature=Image())
    with pytest.raises(ProtectionError, match="image_column"):
        ds.map(protect(method="random"), batched=True)
    out = ds.map(protect(method="random", image_column="thumb"), batched=True)
    assert stored_digest(out, "img") == stored_digest(ds, "img")        # the other image column is untouched
    assert stored_digest(out, "thumb") != stored_digest(ds, "thumb")


MIXED_SIZES = [(20, 28), (32, 32), (48, 40), (64, 64), (17, 33)]
MIXED_MODES = ["RGB", "L", "RGBA", "LA"]


def mixed_dataset():
    """20 rows (2 per class) of different sizes and modes: RGB, gray, RGB + alpha, gray + alpha."""
    rng = np.random.default_rng(3)
    cells, originals = [], []
    for i in range(20):
        h, w = MIXED_SIZES[i % len(MIXED_SIZES)]
        mode = MIXED_MODES[i % len(MIXED_MODES)]
        arr = rng.integers(0, 256, (h, w, len(mode)), dtype=np.uint8)
        if mode in ("RGBA", "LA"):
            arr[..., -1] = rng.integers(0, 256, (h, w), dtype=np.uint8)     # alpha of every value
        cells.append(png_cell(arr[..., 0] if mode == "L" else arr, mode=mode))
        originals.append((arr, mode))
    return build_dataset(cells, labels=[i % 10 for i in range(20)]), originals


def test_any_size_and_mode_keeps_size_mode_alpha_and_budget(case, batch_options):
    """Every method, per batch and crafted: images of five sizes in four modes come back in their own size and
    mode, alpha byte for byte, gray still gray, every row changed, within epsilon on the stored uint8 pixels."""
    import io

    import PIL.Image

    ds, originals = mixed_dataset()
    out = protect_with(case, ds, batch_options=batch_options, batch_size=7)
    unchanged = []
    for i, (cell, (arr, mode)) in enumerate(zip(stored_cells(out), originals)):
        img = PIL.Image.open(io.BytesIO(cell["bytes"]))
        assert img.mode == mode and img.size == (arr.shape[1], arr.shape[0]), f"row {i}: {img.mode} {img.size}"
        new = np.asarray(img).reshape(arr.shape)
        c = 1 if mode in ("L", "LA") else 3
        assert np.array_equal(new[..., c:], arr[..., c:]), f"row {i}: alpha changed"
        ok, measured = within_budget(case, arr, new)
        assert ok, f"row {i}: {measured}"
        if not (new != arr).any():
            unchanged.append(i)
    # every row changed; a method that sets pixels (ops) may find one already set (a gray pixel: 1 in 256)
    assert not unchanged or (METHODS[case.method].sets_pixels and len(unchanged) <= 1), f"unchanged: {unchanged}"


def test_decoded_pil_input_and_non_png_input_become_png(make_ds):
    """JPEG-stored input (as in the Hub's lossy copies) comes back as fresh PNG, within budget of the decoded JPEG."""
    import io

    import PIL.Image

    cells = []
    for a in tiny_images(10):
        buf = io.BytesIO()
        PIL.Image.fromarray(a).save(buf, format="JPEG", quality=75)
        cells.append({"bytes": buf.getvalue(), "path": None})
    ds = make_ds(images=cells)
    out = ds.map(protect(method="random"), batched=True)
    for x, cell in zip(stored_arrays(ds), stored_cells(out)):
        assert cell["bytes"].startswith(PNG_SIGNATURE)
        assert np.abs(decode_bytes(cell["bytes"]).astype(np.int16) - x.astype(np.int16)).max() <= 8


# ---------------------------------------------------------------------------------------------------------------
# Pickling, fingerprints and the datasets cache
# ---------------------------------------------------------------------------------------------------------------
def test_protect_pickle_round_trip(tiny_ds, tiny_surrogate_dir):
    from hf_unlearnable.surrogates import load_surrogate

    noise = craft(tiny_ds, "random", seed=1)
    for t in (protect(method="random", seed=3), protect(noise=noise),
              protect(method="em", steps=2, surrogate=load_surrogate(tiny_surrogate_dir))):
        t2 = pickle.loads(pickle.dumps(t))
        assert repr(t2) == repr(t)
        a = tiny_ds.map(t, batched=True, load_from_cache_file=False)
        b = tiny_ds.map(t2, batched=True, load_from_cache_file=False)
        assert stored_digest(a) == stored_digest(b)


def test_fingerprint_is_deterministic():
    from datasets.fingerprint import Hasher

    assert Hasher.hash(protect(method="random")) == Hasher.hash(protect(method="random"))
    assert Hasher.hash(protect(method="random", seed=1)) != Hasher.hash(protect(method="random"))
    assert Hasher.hash(protect(method="random", epsilon=4 / 255)) != Hasher.hash(protect(method="random"))
    t = protect(method="random")
    before = Hasher.hash(t)
    build_dataset(n=4).map(t, batched=True)             # calling it must not change what it hashes to
    assert Hasher.hash(t) == before


def test_second_identical_map_hits_the_cache(disk_ds, monkeypatch):
    calls = []
    real = transform_module.encode_png
    monkeypatch.setattr(transform_module, "encode_png", lambda a: calls.append(1) or real(a))

    first = disk_ds.map(protect(method="random"), batched=True)
    assert len(calls) == disk_ds.num_rows
    assert first.cache_files and Path(first.cache_files[0]["filename"]).parent == Path(disk_ds.cache_files[0]["filename"]).parent
    mtime = os.stat(first.cache_files[0]["filename"]).st_mtime_ns

    second = disk_ds.map(protect(method="random"), batched=True)     # a new, identical transform
    assert len(calls) == disk_ds.num_rows, "the transform ran again instead of loading the cached result"
    assert second._fingerprint == first._fingerprint
    assert second.cache_files == first.cache_files
    assert os.stat(second.cache_files[0]["filename"]).st_mtime_ns == mtime
    assert stored_digest(second) == stored_digest(first)

    third = disk_ds.map(protect(method="random", seed=1), batched=True)   # other options: recomputed
    assert len(calls) == 2 * disk_ds.num_rows
    assert third._fingerprint != first._fingerprint


def _listing(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if not p.name.endswith(".lock")}


def test_failed_map_leaves_no_partial_output(tmp_path):
    import datasets

    cells = [png_cell(a) for a in tiny_images()]
    cells[33] = {"bytes": b"\x89PNG\r\n\x1a\n this is not really a PNG", "path": None}   # in a later batch
    path = tmp_path / "with_corrupt_row"
    build_dataset(images=cells).save_to_disk(str(path))
    ds = datasets.load_from_disk(str(path))
    before = _listing(path)
    with pytest.raises(ProtectionError, match="row 33"):
        ds.map(protect(method="random"), batched=True, batch_size=8, with_indices=True)
    assert _listing(path) == before
    noise = craft(build_dataset(), "random")
    with pytest.raises(ProtectionError):
        ds.map(protect(noise=noise), batched=True, batch_size=8, with_indices=True)
    assert _listing(path) == before
