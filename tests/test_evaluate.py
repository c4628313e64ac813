"""evaluate(): the runs it trains (clean, protected, mix + clean-only control), what it reports, defences, and
the seeded mix selection. One real (1-epoch) run checks the whole path; the structural checks replace the victim
trainer with a recorder so they are exact and fast."""

from __future__ import annotations

import importlib
import json
import re

import numpy as np
import pytest
import torch

from hf_unlearnable import Report, craft, evaluate, protect
from hf_unlearnable.defences import DEFENCES, get_defence, grayscale, jpeg
from tests.conftest import build_dataset, stored_arrays, tiny_images

# the module, not the function `hf_unlearnable.evaluate` that the package re-exports under the same name
evaluate_module = importlib.import_module("hf_unlearnable.evaluate")

SMALL_VICTIM = {"arch": "convnet", "width": 8, "train": {"batch_size": 32}}


@pytest.fixture(scope="module")
def data():
    clean = build_dataset()
    protected = clean.map(protect(method="random", seed=0), batched=True)
    test = build_dataset(images=tiny_images(20, seed=99))
    return clean, protected, test


@pytest.fixture(scope="module")
def report(data):
    clean, protected, test = data
    return evaluate(protected, test, clean=clean, mix=[0.5, 1.0], epochs=1, seed=4, victim=SMALL_VICTIM,
                    progress=False)


# -- a real run --------------------------------------------------------------------------------------------------
def test_report_has_every_run_with_sizes(report):
    runs = [(r["defence"], r["train_set"], r["ratio"], r["n_train"]) for r in report.rows]
    assert runs == [("none", "clean", 0.0, 40), ("none", "mix", 0.5, 40), ("none", "clean-only control", 0.5, 20),
                    ("none", "protected", 1.0, 40)]
    for r in report.rows:
        assert 0.0 <= r["test_accuracy"] <= 1.0 and 0.0 <= r["train_accuracy"] <= 1.0


def test_mix_is_compared_with_its_control(report):
    mix = next(r for r in report.rows if r["train_set"] == "mix")
    assert mix["minus_control"] == pytest.approx(report.accuracy("mix", 0.5) - report.accuracy("clean-only control", 0.5))
    assert report.accuracy("protected") == report.rows[-1]["test_accuracy"]
    with pytest.raises(KeyError):
        report.accuracy("mix", 0.25)


def test_report_records_seed_victim_sizes_environment(report):
    assert isinstance(report, Report)
    assert report.seed == 4
    assert report.victim["arch"] == "convnet" and report.victim["width"] == 8
    assert report.victim["train"]["epochs"] == 1 and report.victim["train"]["batch_size"] == 32
    assert report.sizes == {"train": 40, "test": 20, "num_classes": 10}
    assert {"device", "torch", "hf_unlearnable", "python"} <= set(report.environment)
    assert report.seconds > 0


def test_report_serialises(report, tmp_path):
    d = report.to_dict()
    assert json.loads(json.dumps(d)) == d
    text = report.to_json(str(tmp_path / "report.json"))
    assert json.loads((tmp_path / "report.json").read_text()) == json.loads(text) == d


def test_report_markdown_has_a_row_per_run(report):
    md = report.to_markdown()
    table = [line for line in md.splitlines() if line.startswith("| none ")]
    assert len(table) == len(report.rows)
    assert "clean-only control" in md and "seed 4" in md and "40 train / 20 test" in md and "1 epochs" in md
    mix_line = next(line for line in table if "| mix |" in line)
    assert "pts" in mix_line


def test_same_seed_same_report(data, report):
    clean, protected, test = data
    again = evaluate(protected, test, clean=clean, mix=[0.5, 1.0], epochs=1, seed=4, victim=SMALL_VICTIM,
                     progress=False)
    assert [r["test_accuracy"] for r in again.rows] == [r["test_accuracy"] for r in report.rows]


# -- the runs, recorded exactly (victim training replaced by a recorder) -----------------------------------------
@pytest.fixture
def recorded(monkeypatch):
    calls = []

    def fake_fit(model, images, labels, cfg, *, seed=0, desc="", progress=True, transform=None,
                 schedule="onecycle"):
        calls.append({"images": images.clone(), "labels": labels.clone(), "seed": seed, "epochs": cfg.epochs,
                      "desc": desc, "adversarial_epsilon": cfg.adversarial_epsilon, "lr": cfg.lr,
                      "schedule": schedule, "weights": [p.detach().clone() for p in model.parameters()]})
        with torch.no_grad():
            for p in model.parameters():       # a fake step: fine-tuning must start from these weights
                p.add_(1.0)
        return {"train_loss": 0.0, "train_accuracy": 0.0, "steps": 0, "seconds": 0.0}

    monkeypatch.setattr(evaluate_module, "fit", fake_fit)
    return calls


def _hwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(0, 2, 3, 1).numpy()


def test_mix_and_control_rows(data, recorded):
    clean, protected, test = data
    report = evaluate(protected, test, clean=clean, mix=[0.25], epochs=3, seed=1, progress=False)
    C, P = np.stack(stored_arrays(clean)), np.stack(stored_arrays(protected))
    clean_run, mix_run, control_run = recorded
    np.testing.assert_array_equal(_hwc(clean_run["images"]), C)
    mix = _hwc(mix_run["images"])
    from_p = np.array([np.array_equal(m, p) for m, p in zip(mix, P)])
    from_c = np.array([np.array_equal(m, c) for m, c in zip(mix, C)])
    assert (from_p ^ from_c).all()                        # every mix row is exactly its clean or protected twin
    assert from_p.sum() == 10                             # 25 % of 40 rows protected
    np.testing.assert_array_equal(mix_run["labels"].numpy(), np.array(clean["label"]))
    # the control is exactly the clean rows that stayed clean in the mix
    np.testing.assert_array_equal(_hwc(control_run["images"]), C[from_c])
    np.testing.assert_array_equal(control_run["labels"].numpy(), np.array(clean["label"])[from_c])
    assert [r["n_train"] for r in report.rows] == [40, 40, 30]
    assert all(c["seed"] == 1 and c["epochs"] == 3 for c in recorded)


def test_without_baselines_only_the_protected_sets_train(data, recorded):
    clean, protected, test = data
    full = evaluate(protected, test, clean=clean, mix=[0.25, 1.0], epochs=1, seed=1, progress=False)
    mixes = [c["images"] for c in recorded if "mix" in c["desc"]]
    recorded.clear()
    report = evaluate(protected, test, clean=clean, mix=[0.25, 1.0], epochs=1, seed=1, progress=False,
                      baselines=False)
    assert [(r["train_set"], r["ratio"]) for r in report.rows] == [("mix", 0.25), ("protected", 1.0)]
    assert "minus_control" not in report.rows[0]
    assert torch.equal(recorded[0]["images"], mixes[0])     # the same rows as with baselines: shareable
    assert len(full.rows) == 4


def test_mix_selection_is_seeded(data, recorded):
    clean, protected, test = data

    def chosen(seed):
        recorded.clear()
        evaluate(protected, test, clean=clean, mix=[0.5], epochs=1, seed=seed, progress=False)
        C = np.stack(stored_arrays(clean))
        return tuple(not np.array_equal(m, c) for m, c in zip(_hwc(recorded[1]["images"]), C))

    assert chosen(0) == chosen(0)
    assert chosen(0) != chosen(1)
    assert sum(chosen(2)) == 20


def test_without_clean_only_the_protected_run(data, recorded):
    _, protected, test = data
    report = evaluate(protected, test, epochs=1, progress=False)
    assert [r["train_set"] for r in report.rows] == ["protected"] and len(recorded) == 1


def test_defences_are_applied_to_train_and_test(data, recorded, monkeypatch):
    clean, protected, test = data
    seen_test = []
    real_accuracy = evaluate_module.accuracy
    monkeypatch.setattr(evaluate_module, "accuracy",
                        lambda model, x, y, **kw: seen_test.append(x.clone()) or real_accuracy(model, x, y, **kw))
    report = evaluate(protected, test, clean=clean, defences=["none", "grayscale"], epochs=1, progress=False)
    assert [(r["defence"], r["train_set"]) for r in report.rows] == [
        ("none", "clean"), ("none", "protected"), ("grayscale", "clean"), ("grayscale", "protected")]
    for call, x_test in zip(recorded, seen_test):
        gray = "[grayscale]" in call["desc"]
        for x in (call["images"], x_test):
            equal_channels = bool((x[:, 0] == x[:, 1]).all() and (x[:, 1] == x[:, 2]).all())
            assert equal_channels == gray


def test_adversarial_training_defence_changes_the_training_not_the_inputs(data, recorded):
    clean, protected, test = data
    report = evaluate(protected, test, clean=clean, defences=["none", "adversarial"], epochs=1, progress=False)
    assert [(r["defence"], r["train_set"]) for r in report.rows] == [
        ("none", "clean"), ("none", "protected"), ("adversarial", "clean"), ("adversarial", "protected")]
    plain, robust = recorded[:2], recorded[2:]
    assert [c["adversarial_epsilon"] for c in plain] == [0.0, 0.0]
    assert [c["adversarial_epsilon"] for c in robust] == [pytest.approx(8 / 255)] * 2
    for a, b in zip(plain, robust):
        assert torch.equal(a["images"], b["images"])
    assert report.victim["train"]["adversarial_epsilon"] == 0.0      # the reported victim is the undefended one


# -- defences ----------------------------------------------------------------------------------------------------
def test_grayscale_defence():
    import PIL.Image

    images = np.stack(tiny_images(5))
    out = grayscale(images)
    assert out.shape == images.shape and out.dtype == np.uint8
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    pil = np.stack([np.asarray(PIL.Image.fromarray(a).convert("L")) for a in images])
    assert np.abs(out[..., 0].astype(int) - pil.astype(int)).max() <= 1
    assert np.array_equal(grayscale(out), out)            # idempotent


def test_jpeg_defence():
    images = np.stack(tiny_images(5))
    out = jpeg(images)
    assert out.shape == images.shape and out.dtype == np.uint8
    assert not np.array_equal(out, images)
    assert np.abs(out.astype(int) - images.astype(int)).mean() > 8        # quality 10 is heavy
    assert np.array_equal(jpeg(images), out)                               # deterministic
    gentle = jpeg(images, quality=95)
    assert np.abs(gentle.astype(int) - images.astype(int)).mean() < np.abs(out.astype(int) - images.astype(int)).mean()


def test_defence_registry():
    assert {"none", "grayscale", "jpeg"} <= set(DEFENCES)
    x = np.stack(tiny_images(2))
    assert get_defence("none")(x) is x


def test_evaluate_accepts_crafted_classwise_protection(data, recorded):
    clean, _, test = data
    noise = craft(clean, "em", mode="classwise", max_iters=1, min_iters=1, train_steps=1, surrogate_width=8)
    protected = clean.map(protect(noise=noise), batched=True)
    report = evaluate(protected, test, clean=clean, mix=[0.5], epochs=1, progress=False)
    assert [r["train_set"] for r in report.rows] == ["clean", "mix", "clean-only control"]


def test_mix_with_an_empty_control_is_refused(data, recorded):
    from hf_unlearnable import ProtectionError

    clean, protected, test = data
    with pytest.raises(ProtectionError, match="control"):
        evaluate(protected, test, clean=clean, mix=[0.99], epochs=1, progress=False)


# -- protocol="finetune" -------------------------------------------------------------------------------------------
def test_finetune_pretrains_on_the_clean_part_then_finetunes_twice_from_the_same_weights(data, recorded):
    clean, protected, test = data
    report = evaluate(protected, test, clean=clean, protocol="finetune", mix=[0.25], epochs=3, seed=1,
                      victim={"arch": "convnet", "width": 8, "finetune_epochs": 2, "finetune_lr": 0.005},
                      progress=False)
    C, P = np.stack(stored_arrays(clean)), np.stack(stored_arrays(protected))
    pre, ft_protected, ft_clean = recorded
    labels = np.array(clean["label"])
    chosen = evaluate_module.mix_rows(40, 0.25, 1)
    np.testing.assert_array_equal(_hwc(pre["images"]), C[~chosen])
    np.testing.assert_array_equal(_hwc(ft_protected["images"]), P[chosen])
    np.testing.assert_array_equal(_hwc(ft_clean["images"]), C[chosen])
    np.testing.assert_array_equal(ft_protected["labels"].numpy(), labels[chosen])
    assert (pre["epochs"], pre["schedule"]) == (3, "onecycle")
    assert (ft_protected["epochs"], ft_protected["lr"], ft_protected["schedule"]) == (2, 0.005, "cosine")
    # both fine-tunes start from the pre-trained weights (the fake step added 1 to every weight), not from each other
    for a, b, w in zip(ft_protected["weights"], ft_clean["weights"], pre["weights"]):
        assert torch.equal(a, b) and torch.equal(a, w + 1.0)
    assert [(r["train_set"], r["ratio"], r["n_train"]) for r in report.rows] == [
        ("pre-trained", 0.25, 30), ("fine-tuned on protected", 0.25, 10), ("fine-tuned on clean", 0.25, 10)]
    assert "minus_control" in report.rows[1] and "minus_control" in report.rows[2]
    assert report.protocol == "finetune" and report.to_dict()["protocol"] == "finetune"
    assert report.victim["finetune_epochs"] == 2
    md = report.to_markdown()
    assert "Protocol: finetune" in md and "vs pre-trained victim" in md and "| fine-tuned on clean |" in md


def test_finetune_defaults_to_half_and_baselines_false_skips_the_clean_finetune(data, recorded):
    clean, protected, test = data
    report = evaluate(protected, test, clean=clean, protocol="finetune", epochs=1, progress=False, baselines=False)
    assert [(r["train_set"], r["ratio"]) for r in report.rows] == [("pre-trained", 0.5),
                                                                   ("fine-tuned on protected", 0.5)]
    assert evaluate(protected, test, clean=clean, epochs=1, progress=False).protocol == "scratch"


@pytest.mark.parametrize("kwargs, words", [
    ({"protocol": "retrain"}, "protocol='retrain'"),
    ({"protocol": "finetune", "mix": [1.0]}, "no clean rows to pre-train"),
    ({"protocol": "finetune", "clean": None}, "needs clean="),
    ({"protocol": "finetune", "victim": {"finetune_epochs": 0}}, "finetune_epochs=0"),
    ({"protocol": "finetune", "victim": {"finetune_lr": -1}}, "finetune_lr=-1"),
])
def test_finetune_refusals(data, recorded, kwargs, words):
    from hf_unlearnable.errors import ProtectionError

    clean, protected, test = data
    with pytest.raises(ProtectionError, match=re.escape(words)):
        evaluate(protected, test, **{"clean": clean, "epochs": 1, "progress": False, **kwargs})
    assert recorded == []


def test_finetune_real_run(data):
    clean, protected, test = data
    report = evaluate(protected, test, clean=clean, protocol="finetune", mix=[0.5], epochs=1, seed=3,
                      victim={**SMALL_VICTIM, "finetune_epochs": 1}, progress=False)
    assert len(report.rows) == 3 and all(0 <= r["test_accuracy"] <= 1 for r in report.rows)
    assert Report(**json.loads(report.to_json())).to_markdown() == report.to_markdown()
