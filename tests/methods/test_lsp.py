"""LSP (methods.md §4.5): per class a far-apart centre in a 4x4x3 patch space, per row centre + N(0, I), nearest-
upsampled and scaled to an exact L2 norm; the patterns alone are linearly separable by class."""

from __future__ import annotations

import numpy as np
import pytest

from hf_unlearnable.errors import ProtectionError
from hf_unlearnable.methods import METHODS
from hf_unlearnable.methods.lsp import LinearlySeparableNoise, LSPConfig, class_signs

from tests.methods.test_ar import IDS, LABELS, images, l2  # noqa: E402  (the shared fixtures, not its tests)


def method(seed=0, **options) -> LinearlySeparableNoise:
    return LinearlySeparableNoise(config=LSPConfig.from_options("lsp", seed=seed, **options))


def test_registered_l2_per_batch_by_class():
    assert METHODS["lsp"] is LinearlySeparableNoise and LinearlySeparableNoise.config_class is LSPConfig
    assert LinearlySeparableNoise.norm == "l2" and LSPConfig.norm == "l2"
    assert LinearlySeparableNoise.per_batch and LinearlySeparableNoise.uses_labels
    assert LinearlySeparableNoise.uses_resolution and not LinearlySeparableNoise.batch_coupled
    cfg = LSPConfig()
    assert cfg.epsilon == pytest.approx(1.304, abs=1e-3) and cfg.patch == 8 and cfg.class_sep == 10.0


def test_shape_dtype_and_exact_l2_scaled_by_area():
    delta = method().perturb(images(), LABELS, IDS)
    assert delta.shape == (6, 32, 32, 3) and delta.dtype == np.float32 and np.isfinite(delta).all()
    np.testing.assert_allclose(l2(delta), (3072 ** 0.5) * 6 / 255, rtol=1e-6)
    big = method(epsilon=0.5).perturb(images(h=64, w=48), LABELS, IDS)
    assert big.shape == (6, 64, 48, 3)
    np.testing.assert_allclose(l2(big), 0.5 * np.sqrt(64 * 48 / 1024), rtol=1e-6)
    assert method().perturb(images(0), np.zeros(0, np.int64), []).shape == (0, 32, 32, 3)


def test_constant_on_each_patch():
    delta = method().perturb(images(), LABELS, IDS)
    blocks = delta.reshape(6, 4, 8, 4, 8, 3)                       # 4x4 patches of 8x8 pixels at 32 px
    np.testing.assert_array_equal(blocks, np.broadcast_to(blocks[:, :, :1, :, :1], blocks.shape))
    assert len(np.unique(blocks[0, :, 0, :, 0])) == 48             # 48 free values, no two equal
    big = method().perturb(images(h=64, w=48), LABELS, IDS).reshape(6, 4, 16, 4, 12, 3)   # still a 4x4 grid
    np.testing.assert_array_equal(big, np.broadcast_to(big[:, :, :1, :, :1], big.shape))
    # the same pattern at any size, and the same strength per pixel (the budget scales with sqrt(area))
    np.testing.assert_allclose(big[:, :, 0, :, 0], blocks[:, :, 0, :, 0], rtol=1e-5)
    fine = method(patch=4).perturb(images(), LABELS, IDS).reshape(6, 8, 4, 8, 4, 3)
    np.testing.assert_array_equal(fine, np.broadcast_to(fine[:, :, :1, :, :1], fine.shape))
    odd = method().perturb(images(h=30, w=10), LABELS, IDS)       # sizes not divisible by 4: nearest, 4x4 values
    assert all(len(np.unique(odd[i, :, :, 0])) == 16 for i in range(6))


def test_seeded_by_row_id_and_class_not_by_batch():
    m = method()
    a = m.perturb(images(), LABELS, IDS)
    b = m.perturb(images()[::-1], LABELS[::-1], IDS[::-1])
    np.testing.assert_array_equal(a, b[::-1])
    for i in (0, 4):
        np.testing.assert_array_equal(m.perturb(images(1), LABELS[i:i + 1], IDS[i:i + 1])[0], a[i])
    many_ids = [f"other-{i}" for i in range(300)] + IDS
    many = m.perturb(images(306), np.concatenate([np.arange(300) % 40, LABELS]), many_ids)
    np.testing.assert_array_equal(many[300:], a)
    assert not np.array_equal(a[0], a[3])                           # two rows of class 0: each its own point
    other_seed = method(seed=1).perturb(images(), LABELS, IDS)
    assert all(not np.array_equal(other_seed[i], a[i]) for i in range(6))
    assert not np.array_equal(class_signs(0, 3, 48), class_signs(1, 3, 48))


def test_any_class_index():
    labels = np.array([10, 999, 99_999, 123_456])
    delta = method().perturb(images(4), labels, IDS[:4])
    np.testing.assert_allclose(l2(delta), (3072 ** 0.5) * 6 / 255, rtol=1e-6)
    signs = np.stack([class_signs(0, int(k), 48) for k in labels])
    assert set(np.unique(signs)) == {-1.0, 1.0}
    assert len({s.tobytes() for s in signs}) == 4                   # a vertex of its own per class
    # the pattern points at its class's vertex (class_sep 10 x sqrt(48) against noise of norm about sqrt(48))
    cos = (delta[:, ::8, ::8, :].reshape(4, 48) * signs).sum(axis=1) / l2(delta[:, ::8, ::8, :])
    assert (cos > 0.95).all()


def test_patterns_are_linearly_separable():
    """A nearest-class-centre classifier fitted on 100 rows of 5 classes labels 100 other rows perfectly."""
    m = method()
    classes = np.array([0, 1, 7, 42, 99_999])
    labels = np.repeat(classes, 20)
    fit = m.perturb(images(100), labels, [f"fit-{i}" for i in range(100)]).reshape(100, -1)
    held = m.perturb(images(100), labels, [f"held-{i}" for i in range(100)]).reshape(100, -1)
    centres = np.stack([fit[labels == k].mean(axis=0) for k in classes])
    for x in (fit, held):
        dist = ((x[:, None, :] - centres[None]) ** 2).sum(axis=2)
        assert (classes[dist.argmin(axis=1)] == labels).all()
    # and the margin is wide: every row is far nearer its own centre than any other
    dist = np.sort(((held[:, None, :] - centres[None]) ** 2).sum(axis=2), axis=1)
    assert (dist[:, 0] < 0.3 * dist[:, 1]).all()


def test_refusals():
    m = method()
    with pytest.raises(ProtectionError, match="needs labels"):
        m.perturb(images(), None, IDS)
    with pytest.raises(ProtectionError, match="label -1"):
        m.perturb(images(), np.array([0, 1, 2, -1, 4, 5]), IDS)
    with pytest.raises(ProtectionError, match="needs a label column"):
        m.pseudo_labels(images())
    with pytest.raises(ProtectionError, match="row id"):
        m.perturb(images(), LABELS, IDS[:5])
    with pytest.raises(ProtectionError, match="patch=3"):
        LSPConfig(epsilon=0.5, patch=3).validate()
    with pytest.raises(ProtectionError, match="class_sep=0"):
        LSPConfig(epsilon=0.5, class_sep=0.0).validate()
    LSPConfig(epsilon=0.5, patch=16, class_sep=2.5).validate()
