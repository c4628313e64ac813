"""ops: one pixel (a cell of a 32x32 grid) per class set to the class's corner colour, an L0 budget."""

from __future__ import annotations

import numpy as np
import pytest

from hf_unlearnable import ProtectionError, protect
from hf_unlearnable.methods import METHODS
from hf_unlearnable.methods.ops import MAX_CLASSES, OnePixelShortcut, OPSConfig
from tests.conftest import build_dataset, stored_arrays


def _method(**options) -> OnePixelShortcut:
    return OnePixelShortcut(OPSConfig.from_options("ops", **options))


def test_registered_with_an_l0_budget_of_one_pixel():
    assert METHODS["ops"] is OnePixelShortcut and OnePixelShortcut.norm == "l0"
    assert OPSConfig().epsilon == 1


def test_each_class_gets_one_distinct_pixel_and_colour_from_the_seed():
    m = _method(seed=3)
    cells, colours = m.class_pixels(np.arange(50))
    pairs = {(int(r), int(c), tuple(v)) for (r, c), v in zip(cells[:, 0], colours[:, 0])}
    assert len(pairs) == 50 and set(np.unique(colours)) <= {0.0, 1.0}
    assert not any(v in ((0, 0, 0), (1, 1, 1)) for *_, v in pairs)     # never black or white
    assert (cells >= 0).all() and (cells < 32).all()
    again, _ = _method(seed=3).class_pixels(np.array([7]))
    assert np.array_equal(again[0], cells[7])                     # a class's pixel does not depend on the others
    other, _ = _method(seed=4).class_pixels(np.arange(50))
    assert not np.array_equal(other, cells)
    with pytest.raises(ProtectionError, match="out of range"):
        m.class_pixels(np.array([MAX_CLASSES]))


@pytest.mark.parametrize("h, w", [(32, 32), (64, 48), (20, 90)])
def test_perturb_sets_the_class_pixel_block_exactly(h, w):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, h, w, 3), dtype=np.uint8)
    labels = np.array([0, 1, 0, 5])
    m = _method()
    delta = m.perturb(images, labels, ["a", "b", "c", "d"])
    out = images / 255.0 + delta
    (cells, colours) = m.class_pixels(labels)
    for i in range(4):
        changed = np.any(delta[i] != 0, axis=2)
        assert 1 <= changed.sum() <= -(-h // 32) * -(-w // 32)
        assert np.allclose(out[i][changed], colours[i, 0], atol=1e-6)
    assert np.array_equal(np.any(delta[0] != 0, 2), np.any(delta[2] != 0, 2))      # same class, same pixel


def test_protect_keeps_the_l0_budget_at_every_size_and_needs_labels():
    imgs = [np.random.default_rng(i).integers(0, 256, (s, s + 7, 3), dtype=np.uint8) for i, s in
            enumerate([32, 40, 64, 100, 17])]
    ds = build_dataset(images=imgs, labels=[0, 1, 2, 3, 4])
    out = ds.map(protect(method="ops"), batched=True)
    for before, after in zip(stored_arrays(ds), stored_arrays(out)):
        changed = np.any(before != after, axis=2).sum()
        h, w = before.shape[:2]
        assert 1 <= changed <= -(-h // 32) * -(-w // 32)
    with pytest.raises(ProtectionError, match="needs a label column"):
        build_dataset(images=imgs, label_column=None).map(protect(method="ops"), batched=True)
    with pytest.raises(ProtectionError, match="needs no crafting"):
        __import__("hf_unlearnable").craft(ds, "ops")
