"""Targeted adversarial poisoning (TAP): its config, the targeted PGD (lowers the loss toward the target class,
inside the box), the targets ("next", "nearest"), per-row determinism, and the per-batch form through protect()."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import Value

from hf_unlearnable import ProtectionError, protect
from hf_unlearnable.methods import METHODS
from hf_unlearnable.methods.tap import TAPConfig, TargetedAdversarialPoisoning, pgd_targeted, target_classes
from hf_unlearnable.surrogates import DEFAULT_DIR, WEIGHTS_NAME, load_surrogate
from tests.conftest import build_dataset, stored_arrays, tiny_images

EPS = 8 / 255


@pytest.fixture(scope="module")
def batch():
    images = np.stack(tiny_images(24, seed=3))
    labels = np.arange(24) % 10
    ids = [f"row-{i}" for i in range(24)]
    return images, labels, ids


@pytest.fixture(scope="module")
def sharp_surrogate():
    """A surrogate whose logits move with the input: a seeded linear classifier on the pixels (10 classes), so a
    loss that falls under PGD means the attack works (the random tiny ConvNet is nearly flat, see below)."""
    from hf_unlearnable.surrogates import Surrogate, SurrogateConfig
    from tests.conftest import CLASS_NAMES

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    with torch.no_grad():
        net[1].weight.mul_(3)
    return Surrogate(SurrogateConfig(arch="convnet", width=8, num_classes=10, class_names=CLASS_NAMES), model=net,
                     name_or_path="sharp-linear")


def _x(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


def _released(images: np.ndarray, delta: np.ndarray) -> torch.Tensor:
    """What a release holds: the image plus delta, rounded to uint8 (as the transform does)."""
    return _x(np.clip(np.rint(images.astype(np.float64) + delta.astype(np.float64) * 255), 0, 255).astype(np.uint8))


def _ce(model, x, target) -> float:
    with torch.no_grad():
        return float(F.cross_entropy(model.eval()(x), target))


# -- config -------------------------------------------------------------------------------------------------------
def test_registered_config_defaults_and_validation():
    assert METHODS["tap"] is TargetedAdversarialPoisoning and TargetedAdversarialPoisoning.config_class is TAPConfig
    assert TargetedAdversarialPoisoning.uses_labels and TargetedAdversarialPoisoning.per_batch
    assert not TargetedAdversarialPoisoning.batch_coupled and TargetedAdversarialPoisoning.norm == "linf"
    cfg = TAPConfig.from_options("tap")
    assert cfg.epsilon == pytest.approx(8 / 255) and cfg.steps == 50 and cfg.target == "next" and cfg.random_start
    assert cfg.step_size == pytest.approx(2.5 * cfg.epsilon / cfg.steps)          # resolved: 0.4/255
    assert TAPConfig.from_options("tap", steps=1).step_size == pytest.approx(EPS)   # capped at epsilon
    assert TAPConfig.from_options("tap", step_size=1 / 255).step_size == pytest.approx(1 / 255)
    for bad, name in ((dict(steps=0), "steps"), (dict(steps=-3), "steps"), (dict(steps=2.5), "steps"),
                      (dict(target="furthest"), "target"), (dict(step_size=0.0), "step_size"),
                      (dict(step_size=9 / 255), "step_size"), (dict(batch_size=0), "batch_size"),
                      (dict(random_start="yes"), "random_start"), (dict(mode="classwise"), "mode")):
        with pytest.raises(ProtectionError, match=name):
            TAPConfig.from_options("tap", **bad)


def test_config_json_round_trip():
    cfg = TAPConfig.from_options("tap", epsilon=4 / 255, steps=7, target="nearest", seed=3)
    data = json.loads(cfg.to_json())
    assert data["steps"] == 7 and data["target"] == "nearest" and data["step_size"] == pytest.approx(2.5 * 4 / 255 / 7)
    assert TAPConfig.from_dict(data) == cfg


# -- targets and the targeted PGD ---------------------------------------------------------------------------------
def test_target_classes():
    logits = torch.tensor([[5.0, 4.0, 1.0], [0.0, 1.0, 9.0], [2.0, 1.0, 3.0]])
    y = torch.tensor([0, 2, 1])
    assert target_classes(logits, y, "next").tolist() == [1, 0, 2]          # (y + 1) mod K
    assert target_classes(logits, y, "nearest").tolist() == [1, 1, 2]       # best class other than y


def test_pgd_targeted_lowers_the_targeted_loss_inside_the_box(sharp_surrogate, batch):
    images, labels, _ = batch
    model = sharp_surrogate.eval()
    x, y = _x(images), torch.as_tensor(labels)
    target = (y + 1) % 10
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    delta = pgd_targeted(model, x, target, torch.zeros_like(x), epsilon=EPS, step_size=EPS / 4, steps=10)
    assert delta.abs().max() <= EPS + 1e-6 and delta.abs().max() > EPS / 2
    assert (x + delta).min() >= 0 and (x + delta).max() <= 1
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())     # weights untouched
    before, after = _ce(model, x, target), _ce(model, x + delta, target)
    assert after < 0.5 * before, (before, after)
    # ... and it is the *targeted* loss that falls: most rows are now predicted as their target, few were before
    with torch.no_grad():
        hits = [float((model(z).argmax(1) == target).float().mean()) for z in (x, x + delta)]
    assert hits[0] < 0.3 and hits[1] > 0.7, hits


def test_the_tiny_random_surrogate_is_nearly_flat(tiny_surrogate_dir, batch):
    """Why the loss tests use `sharp_surrogate`: the session's random ConvNet gives almost the same logits for every
    image (CE ~ ln 10), so a falling loss on it would say little."""
    images, labels, _ = batch
    model = load_surrogate(tiny_surrogate_dir).eval()
    assert abs(_ce(model, _x(images), torch.as_tensor(labels)) - np.log(10)) < 0.05


# -- perturb ------------------------------------------------------------------------------------------------------
def test_perturb_shape_budget_and_targeted_loss(sharp_surrogate, batch):
    images, labels, ids = batch
    method = TargetedAdversarialPoisoning(surrogate=sharp_surrogate, steps=8)
    delta = method.perturb(images, labels, ids)
    assert delta.shape == images.shape and delta.dtype == np.float32
    assert np.abs(delta).max() <= EPS + 1e-6 and np.abs(delta).max() > EPS / 2
    x = _x(images)
    assert (x + torch.from_numpy(delta).permute(0, 3, 1, 2)).min() >= 0      # clipped to the image range
    model = method.surrogate
    target = (torch.as_tensor(labels) + 1) % 10
    assert _ce(model, _released(images, delta), target) < 0.5 * _ce(model, x, target)


def test_nearest_targets_another_class(sharp_surrogate, batch):
    images, labels, ids = batch
    method = TargetedAdversarialPoisoning(surrogate=sharp_surrogate, steps=8, target="nearest")
    x, y = _x(images), torch.as_tensor(labels)
    with torch.no_grad():
        logits = method.surrogate.eval()(x)
    target = target_classes(logits, y, "nearest")
    assert (target != y).all()
    others = logits.clone()
    others[torch.arange(len(y)), y] = float("-inf")
    assert torch.equal(logits[torch.arange(len(y)), target], others.max(1).values)   # the runner-up class
    delta = method.perturb(images, labels, ids)
    assert _ce(method.surrogate, _released(images, delta), target) < 0.5 * _ce(method.surrogate, x, target)
    # another objective than "next": other bytes
    assert not np.array_equal(delta, TargetedAdversarialPoisoning(surrogate=sharp_surrogate, steps=8)
                              .perturb(images, labels, ids))


def test_same_seed_and_row_same_bytes_whatever_the_batch(tiny_surrogate_dir, batch):
    images, labels, ids = batch
    method = TargetedAdversarialPoisoning(surrogate=tiny_surrogate_dir, steps=3, seed=4)
    ref = method.perturb(images, labels, ids)
    order = np.random.default_rng(0).permutation(len(ids))
    shuffled = method.perturb(images[order], labels[order], [ids[i] for i in order])
    np.testing.assert_array_equal(shuffled, ref[order])
    alone = method.perturb(images[5:6], labels[5:6], ids[5:6])
    np.testing.assert_array_equal(alone[0], ref[5])
    small_chunks = TargetedAdversarialPoisoning(surrogate=tiny_surrogate_dir, steps=3, seed=4, batch_size=5)
    np.testing.assert_array_equal(small_chunks.perturb(images, labels, ids), ref)
    # the seed (through the random start) changes the bytes; so does the row id
    assert not np.array_equal(TargetedAdversarialPoisoning(surrogate=tiny_surrogate_dir, steps=3, seed=5)
                              .perturb(images, labels, ids), ref)
    renamed = method.perturb(images[5:6], labels[5:6], ["another-id"])
    assert not np.array_equal(renamed[0], ref[5])


def test_without_labels_targets_the_predicted_class_plus_one(tiny_surrogate_dir, batch):
    images, _, ids = batch
    method = TargetedAdversarialPoisoning(surrogate=tiny_surrogate_dir, steps=3)
    predicted = method.pseudo_labels(images)
    np.testing.assert_array_equal(method.perturb(images, None, ids), method.perturb(images, predicted, ids))


def test_label_out_of_range_is_refused_with_the_fix(tiny_surrogate_dir, batch):
    images, labels, ids = batch
    method = TargetedAdversarialPoisoning(surrogate=tiny_surrogate_dir, steps=1)
    bad = labels.copy()
    bad[2] = 10
    with pytest.raises(ProtectionError, match=r"row 2.*out of range \[0, 10\).*surrogate"):
        method.perturb(images, bad, ids)
    labels = [i % 10 for i in range(12)]
    labels[3] = 10
    ds = build_dataset(images=tiny_images(12), labels=labels, label_feature=Value("int64"))
    with pytest.raises(ProtectionError, match=r"row 3.*out of range.*train_surrogate"):
        ds.map(protect(method="tap", surrogate=tiny_surrogate_dir, steps=1), batched=True, with_indices=True)


def test_protect_keeps_the_budget_and_the_rows(tiny_surrogate_dir):
    ds = build_dataset(n=12)
    out = ds.map(protect(method="tap", surrogate=tiny_surrogate_dir, steps=3), batched=True, batch_size=5)
    before, after = stored_arrays(ds), stored_arrays(out)
    steps = [np.abs(a.astype(int) - b.astype(int)).max() for a, b in zip(before, after)]
    assert max(steps) <= 8 and min(steps) > 0
    assert out["label"] == ds["label"] and out["caption"] == ds["caption"]


@pytest.mark.skipif(not (DEFAULT_DIR / WEIGHTS_NAME).exists(),
                    reason=f"the bundled default surrogate ({DEFAULT_DIR / WEIGHTS_NAME}) has not been trained yet")
def test_with_the_bundled_surrogate_most_images_reach_their_target(cifar_slice):
    data = cifar_slice.select(range(0, 200, 5))                      # 40 rows, every class
    out = data.map(protect(method="tap", steps=10), batched=True, batch_size=16, with_indices=True)
    sur = load_surrogate(None).eval()
    before, after = stored_arrays(data), stored_arrays(out)
    assert max(np.abs(a.astype(int) - b.astype(int)).max() for a, b in zip(before, after)) <= 8
    target = (torch.tensor(data["label"]) + 1) % 10
    with torch.no_grad():
        hit = (sur(_x(np.stack(after))).argmax(1) == target).float().mean()
        hit_clean = (sur(_x(np.stack(before))).argmax(1) == target).float().mean()
    assert hit > 0.8 and hit_clean < 0.2, (float(hit), float(hit_clean))
