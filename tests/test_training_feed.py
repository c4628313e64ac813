"""fit / predict feed the device from images held there once (training._RESIDENT_MAX_SHARE, _feed.py): on the CPU
that path trains byte-identical weights to the per-batch host path it replaced, for every kind of training fit does.

The weights' hashes are not written in as literals: they change with the CPU's kernels and its thread count (1 and
2 threads give other bytes here), so each config is trained twice in one process, once with the device-resident
path forced off.
"""

import hashlib

import pytest
import torch
import torch.nn.functional as F

from hf_unlearnable import _feed, training
from hf_unlearnable.surrogates.nets import build


def _data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
            torch.randint(0, 10, (n,), generator=g))


def _trained_hash(monkeypatch, share: float, **cfg) -> tuple[str, torch.Tensor]:
    monkeypatch.setattr(training, "_RESIDENT_MAX_SHARE", share)
    images, labels = _data()
    torch.manual_seed(0)
    model = build("convnet", 10, 16)
    # batch 16 of 40 rows: the last batch is a partial one
    training.fit(model, images, labels, training.TrainConfig(epochs=1, batch_size=16, **cfg), seed=3, progress=False)
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest(), training.predict(model, images, batch_size=16)


@pytest.mark.parametrize("cfg", [{}, {"augment": False}, {"adversarial_epsilon": 4 / 255, "adversarial_steps": 2},
                                 {"batch_defence": "cutmix"}], ids=["default", "no-augment", "adversarial", "cutmix"])
def test_device_resident_path_trains_the_same_bytes_as_the_host_path(monkeypatch, cfg):
    resident, resident_preds = _trained_hash(monkeypatch, 0.25, **cfg)
    host, host_preds = _trained_hash(monkeypatch, 0.0, **cfg)
    assert resident == host
    assert torch.equal(resident_preds, host_preds)


def test_the_images_are_resident_on_the_cpu_unless_switched_off(monkeypatch):
    images, labels = _data(8)
    cpu = torch.device("cpu")
    assert _feed.Feed(images, labels, cpu, training._RESIDENT_MAX_SHARE).on_device
    assert not _feed.Feed(images, labels, cpu, 0.0).on_device
    feed = _feed.Feed(images, labels, cpu, 0.25)
    idx = next(feed.batches(4, torch.Generator().manual_seed(0)))
    x, y = feed.batch(idx)
    assert torch.equal(x, images[idx]) and torch.equal(y, labels[idx])


def _crop_flip_before(x, gen, pad=4):
    """crop_flip as it was before the device-resident path (the draws moved to the device after indexing)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).to(x.device)
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w))
    cols = torch.where(flip.view(n, 1), cols.flip(1), cols).to(x.device)
    idx_n = torch.arange(n, device=x.device).view(n, 1, 1)
    out = padded.permute(0, 2, 3, 1)[idx_n, rows.view(n, h, 1), cols.view(n, 1, w)]
    return out.permute(0, 3, 1, 2).contiguous()


def test_crop_flip_gives_the_same_crops_and_draws_as_before():
    x = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    new_gen, old_gen = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(training.crop_flip(x, new_gen), _crop_flip_before(x, old_gen))
    assert torch.equal(torch.rand(4, generator=new_gen), torch.rand(4, generator=old_gen))
