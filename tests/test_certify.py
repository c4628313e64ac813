"""The (q, eta)-learnability certificate (methods.md §3.2) and the recovery attack's sphere projection (§3.4)."""

import numpy as np
import pytest
import torch

from hf_unlearnable import ProtectionError
from hf_unlearnable.certify import (certified_learnability, certify, order_statistic_k, project_to_sphere, recover,
                                    smoothed_accuracies)
from hf_unlearnable.surrogates.nets import build


@pytest.mark.parametrize("eta,k", [(0.0, 922), (0.05, 950), (0.1, 969), (0.25, 997), (0.5, None)])
def test_paper_test_vectors(eta, k):
    """n = 1000, q = 0.9, sigma = 0.25: the k of the order-statistic bound, abstaining at eta = 0.5."""
    accs = np.random.default_rng(0).uniform(0, 1, 1000)
    (entry,) = certified_learnability(accs, q=0.9, sigma=0.25, etas=[eta], confidence=0.99)
    assert entry["k"] == k
    if k is None:
        assert entry["learnability"] is None
    else:
        assert entry["learnability"] == np.sort(accs)[k - 1]


def test_learnability_non_decreasing_in_eta():
    accs = np.random.default_rng(1).normal(0.3, 0.05, 500)
    entries = certified_learnability(accs, q=0.8, sigma=0.5, etas=[0, 0.01, 0.05, 0.1, 0.2, 0.3])
    values = [e["learnability"] for e in entries if e["learnability"] is not None]
    assert len(values) >= 3
    assert all(b >= a for a, b in zip(values, values[1:]))


def test_not_clopper_pearson_k_is_exact_binomial_bound():
    from scipy.stats import binom

    for n, qb in [(100, 0.9), (1000, 0.95), (50, 0.5)]:
        k = order_statistic_k(n, qb, 0.99)
        assert binom.cdf(k - 1, n, qb) > 0.99
        if k - 1 >= np.ceil(qb * n):
            assert binom.cdf(k - 2, n, qb) <= 0.99


def test_sphere_projection_sets_norm_exactly_even_inside_the_ball():
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(4, 3, generator=gen), torch.randn(7, generator=gen)]
    anchor = [p.clone() for p in params]
    params[1] += 1e-3  # tiny step: well inside a ball of radius 0.5
    project_to_sphere(params, anchor, 0.5)
    norm = torch.sqrt(sum(((p - a) ** 2).sum() for p, a in zip(params, anchor)))
    assert abs(float(norm) - 0.5) < 1e-5


def test_smoothed_accuracies_reproducible_and_restores_weights():
    model = build("convnet", 3, 4).eval()
    x = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8)
    y = torch.randint(0, 3, (20,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a = smoothed_accuracies(model, x, y, sigma=0.1, n=5, seed=3, progress=False)
    b = smoothed_accuracies(model, x, y, sigma=0.1, n=5, seed=3, progress=False)
    assert np.array_equal(a, b)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # parameters restored, BN buffers never touched


def test_bad_arguments_are_protection_errors():
    from hf_unlearnable.certify import _check

    with pytest.raises(ProtectionError, match="q="):
        _check(1.5, 0.25, 10, 0.99, [0.1])
    with pytest.raises(ProtectionError, match="sigma="):
        _check(0.9, 0.0, 10, 0.99, [0.1])
    for kwargs, name in ((dict(q="0.9"), "q="), (dict(sigma=None), "sigma="), (dict(n=True), "n="),
                         (dict(etas=[]), "empty"), (dict(etas=0.1), "etas="), (dict(etas=[float("nan")]), "eta="),
                         (dict(model="resnet18"), "nn.Module")):
        with pytest.raises(ProtectionError, match=name):
            certify(None, None, **kwargs)


def test_certify_and_recover_check_that_train_and_test_are_one_task(tmp_path):
    import datasets

    train = datasets.load_from_disk(_tiny_disk_dataset(tmp_path, n=8))
    # test images of another size are resized to the working resolution, like the training images
    small = datasets.Dataset.from_dict({"img": [np.zeros((16, 16, 3), np.uint8)] * 2, "label": [0, 1]},
                                       features=datasets.Features(img=datasets.Image(), label=datasets.Value("int64")))
    assert certify(train, small, epochs=1, n=2, progress=False).to_dict()
    wide = datasets.Dataset.from_dict({"img": [np.zeros((32, 32, 3), np.uint8)] * 2, "label": [0, 7]},
                                      features=datasets.Features(img=datasets.Image(), label=datasets.Value("int64")))
    with pytest.raises(ProtectionError, match="test row 1: label 7"):
        certify(train, wide, epochs=1, progress=False)
    model = build("convnet", 4, 8)
    with pytest.raises(ProtectionError, match="4 outputs.*label 7"):
        certify(None, wide, model=model, n=2, progress=False)
    for kwargs, name in ((dict(etas=[]), "empty"), (dict(epochs=0), "epochs="), (dict(lr=-1), "lr="),
                         (dict(batch_size="8"), "batch_size="), (dict(seed="x"), "seed=")):
        with pytest.raises(ProtectionError, match=name):
            recover(model, train, train, progress=False, **kwargs)


def _tiny_disk_dataset(tmp_path, n=40, seed=0):
    import datasets

    from hf_unlearnable._images import encode_png

    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    # class-dependent brightness so a 1-epoch model is above chance
    imgs = [np.clip(rng.integers(0, 60, (32, 32, 3)) + 50 * y, 0, 255).astype(np.uint8) for y in labels]
    ds = datasets.Dataset.from_dict(
        {"img": [encode_png(a) for a in imgs], "label": labels.tolist()},
        features=datasets.Features(img=datasets.Image(), label=datasets.ClassLabel(names=list("abcd"))))
    path = tmp_path / "tiny"
    ds.save_to_disk(str(path))
    return str(path)


def test_cli_certify_and_recover(tmp_path, capsys):
    import json

    from hf_unlearnable.cli import main

    data = _tiny_disk_dataset(tmp_path)
    out = tmp_path / "cert.json"
    assert main(["certify", "--protected", data, "--test", data, "--test-split", "train", "--epochs", "1",
                 "--n", "20", "--sigma", "0.01", "--etas", "0", "0.001", "--json", str(out), "-q"]) == 0
    cert = json.loads(out.read_text())
    assert cert["n"] == 20 and len(cert["accuracies"]) == 20
    assert [e["eta"] for e in cert["entries"]] == [0.0, 0.001]
    assert "certified learnability" in capsys.readouterr().out
    rec = tmp_path / "rec.json"
    assert main(["recover", "--protected", data, "--clean", data, "--clean-split", "train", "--test", data,
                 "--test-split", "train", "--epochs", "1", "--etas", "0.5", "1.0", "--recover-epochs", "1",
                 "--json", str(rec), "-q"]) == 0
    curve = json.loads(rec.read_text())["curve"]
    assert [p["eta"] for p in curve] == [0.5, 1.0]
    assert all(0 <= p["test_accuracy"] <= 1 for p in curve)


def test_recover_keeps_weights_on_the_sphere(tmp_path):
    """After fine-tuning, theta is at L2 distance exactly eta from theta-hat (projection after every step)."""
    from hf_unlearnable.certify import project_to_sphere
    from hf_unlearnable.training import TrainConfig, fit

    model = build("convnet", 4, 4)
    anchor = [p.detach().clone() for p in model.parameters()]
    params = list(model.parameters())
    x = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)
    y = torch.arange(32) % 4
    fit(model, x, y, TrainConfig(epochs=1, batch_size=8, lr=0.01), progress=False, schedule="cosine",
        after_step=lambda: project_to_sphere(params, anchor, 0.3))
    dist = torch.sqrt(sum(((p.detach() - a) ** 2).sum() for p, a in zip(params, anchor)))
    assert abs(float(dist) - 0.3) < 1e-4
