"""Training-time batch defences (_augment.py): CutOut's square, the mixed-label loss of CutMix / MixUp and the
labels kornia returns, UEraser's max loss over K copies, and each defence through fit() and evaluate()."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hf_unlearnable import _augment, defences, evaluate
from hf_unlearnable._augment import BATCH_DEFENCES, UERASER_COPIES, cutout, mixed_cross_entropy
from hf_unlearnable.surrogates.nets import build
from hf_unlearnable.training import TrainConfig, fit
from tests.conftest import build_dataset, tiny_images

NAMES = list(BATCH_DEFENCES)


def _zero_boxes(x: torch.Tensor, out: torch.Tensor) -> list[tuple[int, int]]:
    """The (rows, cols) extent of each image's zeroed region; asserts it is one rectangle, the same on every channel,
    and that nothing else changed."""
    boxes = []
    for a, b in zip(x, out):
        zero = b == 0
        assert (zero == zero[0]).all()
        assert torch.equal(b[~zero], a[~zero])
        rows, cols = zero[0].any(1).nonzero().flatten(), zero[0].any(0).nonzero().flatten()
        h, w = len(rows), len(cols)
        assert rows.diff().eq(1).all() and cols.diff().eq(1).all() and int(zero[0].sum()) == h * w
        boxes.append((h, w))
    return boxes


@pytest.mark.parametrize("shape, side", [((32, 32), 16), ((24, 40), 12)])
def test_cutout_zeroes_one_square_of_half_the_side(shape, side):
    torch.manual_seed(0)
    x = torch.rand(64, 3, *shape) * 0.5 + 0.5          # no zeros of its own
    boxes = _zero_boxes(x, cutout(x))
    assert all(1 <= h <= side and 1 <= w <= side for h, w in boxes)    # clipped at the borders
    assert (side, side) in boxes                                        # whole where it fits


def test_mix_labels_say_which_share_of_each_image_is_the_partners():
    """kornia's (y_a, y_b, w) rows as _augment returns them: w is the partner y_b's share of the image."""
    torch.manual_seed(0)
    x, y = torch.rand(8, 3, 16, 16), torch.arange(8)        # label i = image i: y_b names the partner
    mixed, t = BATCH_DEFENCES["mixup"].augment(x, y)
    for i, (a, b, w) in enumerate(t.tolist()):
        assert int(a) == i
        torch.testing.assert_close(mixed[i], (1 - w) * x[i] + w * x[int(b)])
    mixed, t = BATCH_DEFENCES["cutmix"].augment(x, y)
    assert mixed.shape == x.shape and t.shape == (8, 3)
    for i, (a, b, w) in enumerate(t.tolist()):
        if int(b) != i:
            from_partner = ((mixed[i] == x[int(b)]) & (mixed[i] != x[i])).all(0).float().mean()
            assert float(from_partner) == pytest.approx(w)
            assert ((mixed[i] == x[i]) | (mixed[i] == x[int(b)])).all()


def test_mixed_label_loss_on_a_hand_example():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    target = torch.tensor([[0.0, 1.0, 0.25], [1.0, 1.0, 0.5]])      # (y_a, y_b, share of y_b)

    def ce(z, c):
        return math.log(sum(math.exp(v) for v in z)) - z[c]

    expected = (0.75 * ce([2, 0], 0) + 0.25 * ce([2, 0], 1) + ce([0, 1], 1)) / 2
    assert float(mixed_cross_entropy(logits, target)) == pytest.approx(expected, rel=1e-6)
    loss, out = BATCH_DEFENCES["mixup"].loss(nn.Identity(), logits, target)   # the hook: model(x) = the logits
    assert float(loss) == pytest.approx(expected, rel=1e-6) and out is logits
    # no mixing (w = 0) is the plain loss, label smoothing included
    plain = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    torch.testing.assert_close(mixed_cross_entropy(logits, plain, 0.1),
                               F.cross_entropy(logits, torch.tensor([0, 1]), label_smoothing=0.1))


class _Recorder(nn.Module):
    """A linear classifier that records the batches it sees."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.fc = nn.Linear(3 * 16 * 16, 3)
        self.seen = []

    def forward(self, x):
        self.seen.append(x)
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("name, copies", [("ueraser", UERASER_COPIES), ("ueraser-lite", 1)])
def test_ueraser_trains_on_the_max_loss_over_k_copies(name, copies):
    torch.manual_seed(0)
    x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    views, target = BATCH_DEFENCES[name].augment(x, y)
    assert views.shape == (copies * 4, 3, 16, 16) and torch.equal(target, y)
    assert views.min() >= 0 and views.max() <= 1
    model = _Recorder()
    loss, out = BATCH_DEFENCES[name].loss(model, views, target, 0.1)
    assert [len(v) for v in model.seen] == [4] * copies                     # one forward pass per copy
    per_copy = torch.stack([F.cross_entropy(model.fc(v.flatten(1)), y, reduction="none", label_smoothing=0.1)
                            for v in views.split(4)])
    torch.testing.assert_close(loss, per_copy.max(0).values.mean())
    torch.testing.assert_close(out, model.fc(views[-4:].flatten(1)))           # the last copy's logits
    if copies > 1:
        assert not torch.equal(views[:4], views[4:8])                          # independent draws
        assert loss > per_copy.mean()


def _trained(name: str, seed: int = 0, n: int = 16, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % 2
    torch.manual_seed(0)
    model = build("convnet", 2, 4)
    hist = fit(model, images, labels, TrainConfig(epochs=1, batch_size=8, bf16=False, batch_defence=name),
               seed=seed, progress=False)
    assert math.isfinite(hist["train_loss"]) and 0 <= hist["train_accuracy"] <= 1
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.fixture(scope="module")
def undefended():
    return _trained("none")


@pytest.mark.parametrize("name", NAMES)
def test_each_defence_trains_deterministically_and_differently(name, undefended):
    weights = _trained(name)
    assert torch.isfinite(weights).all()
    assert not torch.equal(weights, undefended)
    assert torch.equal(weights, _trained(name))                                 # same seed, same weights
    assert not torch.equal(weights, _trained(name, seed=1))


@pytest.mark.parametrize("name", NAMES)
def test_small_images_and_a_last_batch_of_one(name):
    _trained(name, n=9, size=12)


def test_train_config_validates_the_batch_defence():
    for bad in ["cutmixx", "", None, ["cutmix"], 3]:
        with pytest.raises(ValueError, match="ueraser-lite"):
            TrainConfig(batch_defence=bad)
    with pytest.raises(ValueError, match="adversarial"):
        TrainConfig(batch_defence="mixup", adversarial_epsilon=8 / 255)
    cfg = TrainConfig(batch_defence="ueraser")
    assert cfg.to_dict()["batch_defence"] == "ueraser" and TrainConfig(**cfg.to_dict()) == cfg
    assert TrainConfig().batch_defence == "none"


def test_defences_registry_lists_the_batch_defences():
    assert defences.BATCH_DEFENCES == tuple(_augment.BATCH_DEFENCES)
    for name in NAMES:
        assert defences.get_defence(name) is defences.no_defence               # inputs untouched, test images too
        options = TrainConfig(**defences.TRAINING_OPTIONS[name])
        assert options.batch_defence == name and options.adversarial_epsilon == 0
    assert TrainConfig(**defences.TRAINING_OPTIONS["adversarial"]).batch_defence == "none"


def test_importing_the_library_does_not_import_kornia():
    code = "import sys, hf_unlearnable, hf_unlearnable.evaluate; print('kornia' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_evaluate_with_cutmix_end_to_end(monkeypatch):
    import importlib

    evaluate_module = importlib.import_module("hf_unlearnable.evaluate")
    real_fit, used = evaluate_module.fit, []
    def recording_fit(model, x, y, cfg, **kw):
        used.append(cfg.batch_defence)
        return real_fit(model, x, y, cfg, **kw)

    monkeypatch.setattr(evaluate_module, "fit", recording_fit)
    data = build_dataset()
    test = build_dataset(images=tiny_images(20, seed=99))
    report = evaluate(data, test, defences=["none", "cutmix"], epochs=1, seed=0, progress=False,
                      victim={"arch": "convnet", "width": 4, "train": {"batch_size": 16}})
    assert [(r["defence"], r["train_set"]) for r in report.rows] == [("none", "protected"), ("cutmix", "protected")]
    assert used == ["none", "cutmix"]
    assert all(0 <= r["test_accuracy"] <= 1 for r in report.rows)
    assert report.accuracy("protected", defence="cutmix") == report.rows[1]["test_accuracy"]
    assert report.victim["train"]["batch_defence"] == "none"                   # the reported victim: undefended
    assert "| cutmix | protected |" in report.to_markdown()
