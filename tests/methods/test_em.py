"""Error-minimising noise (EM): its pieces (PGD-min, class-wise averaging, stratified subset, config) and the
dataset-level min-min (resumable checkpoints, stop rule), and the per-batch form."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hf_unlearnable import ProtectionError, craft, protect
from hf_unlearnable.methods import METHODS
from hf_unlearnable.methods.em import EMConfig, ErrorMinimizing, classwise_average, pgd_min, stratified_subset
from hf_unlearnable.surrogates import DEFAULT_DIR, WEIGHTS_NAME, load_surrogate
from hf_unlearnable.surrogates.nets import build
from tests.conftest import FAST_OPTIONS, build_dataset, stored_arrays

EPS = 8 / 255
EM_FAST = FAST_OPTIONS["em"]


@pytest.fixture
def small_model():
    torch.manual_seed(0)
    model = build("convnet", 10, 8)
    # a few BN statistics so eval mode is not the identity on fresh buffers
    model.train()
    with torch.no_grad():
        model(torch.rand(64, 3, 32, 32))
    return model.eval()


def _loss(model, x, y):
    with torch.no_grad():
        return float(F.cross_entropy(model(x), y))


# -- pgd_min -----------------------------------------------------------------------------------------------------
def test_pgd_min_lowers_loss_and_stays_in_the_box(small_model):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(16, 3, 32, 32, generator=g)
    x[:4] = 0.0          # rows on the edges of the image range: the projection onto [0, 1] matters there
    x[4:8] = 1.0
    y = torch.randint(0, 10, (16,), generator=g)
    weights = {k: v.clone() for k, v in small_model.state_dict().items()}
    delta = pgd_min(small_model, x, y, torch.zeros_like(x), epsilon=EPS, step_size=EPS / 4, steps=10)
    assert delta.shape == x.shape
    assert delta.abs().max() <= EPS + 1e-6
    assert delta.abs().max() > EPS / 2                      # it moved
    x_adv = x + delta
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (delta[:4] >= 0).all() and (delta[4:8] <= 0).all()
    assert _loss(small_model, x_adv, y) < _loss(small_model, x, y)
    # weights untouched, mode restored
    assert all(torch.equal(v, small_model.state_dict()[k]) for k, v in weights.items())
    assert not small_model.training
    small_model.train()
    pgd_min(small_model, x, y, torch.zeros_like(x), epsilon=EPS, step_size=EPS / 4, steps=1)
    assert small_model.training


def test_pgd_min_more_steps_lower_loss(small_model):
    g = torch.Generator().manual_seed(2)
    x = torch.rand(32, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (32,), generator=g)
    losses = [_loss(small_model, x + pgd_min(small_model, x, y, torch.zeros_like(x), epsilon=EPS,
                                             step_size=EPS / 10, steps=s), y) for s in (1, 10)]
    assert losses[1] < losses[0]


def test_pgd_min_projects_a_start_outside_the_box(small_model):
    x = torch.full((2, 3, 32, 32), 0.5)
    start = torch.full_like(x, 1.0)                          # far outside the epsilon box
    delta = pgd_min(small_model, x, torch.tensor([0, 1]), start, epsilon=EPS, step_size=EPS / 4, steps=0)
    assert torch.allclose(delta, torch.full_like(x, EPS))


# -- classwise_average -------------------------------------------------------------------------------------------
def test_classwise_average():
    class_delta = torch.full((4, 1, 2, 2), 0.5)
    eta = torch.stack([torch.full((1, 2, 2), v) for v in (0.01, 0.03, -0.02, 0.2, 0.2)])
    y = torch.tensor([0, 0, 2, 3, 3])
    out = classwise_average(eta, y, class_delta, EPS)
    assert torch.allclose(out[0], torch.full((1, 2, 2), 0.02))
    assert torch.allclose(out[2], torch.full((1, 2, 2), -0.02))
    assert torch.allclose(out[3], torch.full((1, 2, 2), EPS))        # the mean 0.2 is clipped to epsilon
    assert torch.equal(out[1], class_delta[1])                        # absent class: unchanged
    assert torch.equal(class_delta, torch.full((4, 1, 2, 2), 0.5))    # input not modified in place


# -- stratified_subset -------------------------------------------------------------------------------------------
def test_stratified_subset_same_fraction_per_class_and_seeded():
    labels = np.repeat(np.arange(5), [100, 50, 20, 10, 3])
    np.random.default_rng(0).shuffle(labels)
    pick = stratified_subset(labels, 0.2, seed=0)
    assert (np.diff(pick) > 0).all()                                   # sorted, no duplicates
    counts = np.bincount(labels[pick], minlength=5)
    assert counts.tolist() == [20, 10, 4, 2, 1]                        # 20 % of each class, at least one
    assert np.array_equal(stratified_subset(labels, 0.2, seed=0), pick)
    assert not np.array_equal(stratified_subset(labels, 0.2, seed=1), pick)
    assert len(stratified_subset(labels, 1.0, seed=0)) == len(labels)


# -- EMConfig ----------------------------------------------------------------------------------------------------
def test_em_config_defaults_and_validation():
    assert METHODS["em"] is ErrorMinimizing and ErrorMinimizing.config_class is EMConfig
    assert EMConfig.from_options("em").steps == 20
    assert EMConfig.from_options("em", mode="classwise").steps == 1
    assert EMConfig.from_options("em", mode="classwise", steps=5).steps == 5
    cfg = EMConfig.from_options("em")
    assert cfg.epsilon == pytest.approx(8 / 255) and cfg.step_size == pytest.approx(0.8 / 255)
    assert cfg.mode == "samplewise" and cfg.subset is None and cfg.stop_error == 0.01 and cfg.class_step == "sign"
    for bad in (dict(mode="global"), dict(steps=0), dict(train_steps=-1), dict(min_iters=3, max_iters=2),
                dict(subset=1.5), dict(stop_error=1.0), dict(step_size=0.0), dict(epsilon=4 / 255, step_size=5 / 255),
                dict(class_step="median")):
        with pytest.raises(ProtectionError):
            EMConfig.from_options("em", **bad)


def test_em_config_json_round_trip():
    cfg = EMConfig.from_options("em", mode="classwise", epsilon=4 / 255, step_size=0.5 / 255, seed=7)
    data = json.loads(cfg.to_json())
    assert data["mode"] == "classwise" and data["steps"] == 1 and data["seed"] == 7
    assert EMConfig.from_dict(data) == cfg


# -- craft: the min-min ------------------------------------------------------------------------------------------
FAST = dict(FAST_OPTIONS["em"])


@pytest.fixture(scope="module")
def ds():
    return build_dataset()


def test_craft_classwise_and_samplewise_shapes(ds):
    cw = craft(ds, "em", mode="classwise", **FAST)
    assert cw.kind == "classwise" and cw.steps.shape == (10, 32, 32, 3) and cw.ids is None
    assert cw.config.class_names == ds.features["label"].names
    sw = craft(ds, "em", mode="samplewise", **FAST)
    from hf_unlearnable._data import load_labelled

    assert sw.kind == "samplewise" and sw.steps.shape == (40, 32, 32, 3)
    assert sw.ids == load_labelled(ds).ids
    for noise in (cw, sw):
        assert np.abs(noise.steps).max() <= 8 and np.abs(noise.steps).max() > 0
        assert noise.config.stats["rounds"] == 1 and len(noise.config.stats["history"]) == 1


def test_craft_respects_min_iters_before_stopping(ds):
    noise = craft(ds, "em", mode="classwise", **{**FAST, "min_iters": 2, "max_iters": 4, "stop_error": 0.999})
    hist = noise.config.stats["history"]
    assert [h["round"] for h in hist] == [1, 2]                  # error < 0.999 at once, but not before round 2
    assert hist[-1]["stopped"] and noise.config.stats["reached_stop_error"]
    noise = craft(ds, "em", mode="classwise", **{**FAST, "min_iters": 1, "max_iters": 2, "stop_error": 0.0})
    assert noise.config.stats["rounds"] == 2 and not noise.config.stats["reached_stop_error"]


def test_craft_lowers_surrogate_error_on_easy_task(ds):
    """Class-wise EM makes the data easy: after a few rounds the co-trained surrogate fits x + delta."""
    noise = craft(ds, "em", mode="classwise", **{**FAST, "max_iters": 6, "min_iters": 6, "train_steps": 5,
                                                 "steps": 3, "subset": 1.0})
    errors = [h["error"] for h in noise.config.stats["history"]]
    assert errors[-1] < errors[0]


def _craft_ckpt(ds, path, **kw):
    return craft(ds, "em", mode="classwise", checkpoint_dir=str(path), **{**FAST, "min_iters": 3, **kw})


def test_checkpoint_resume_after_interruption(ds, tmp_path, monkeypatch):
    """An interrupted run resumes from its checkpoint and ends exactly where an uninterrupted run does."""
    from hf_unlearnable.methods import em as em_module

    full = _craft_ckpt(ds, tmp_path / "full", max_iters=3)

    saves = []
    real_save = em_module._Checkpoint.save

    def interrupt_after_two(self, progress, tensors):
        real_save(self, progress, tensors)
        saves.append(progress["iteration"])
        if len(saves) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(em_module._Checkpoint, "save", interrupt_after_two)
    with pytest.raises(KeyboardInterrupt):
        _craft_ckpt(ds, tmp_path / "resumed", max_iters=3)
    monkeypatch.undo()
    state = json.loads((tmp_path / "resumed" / "state.json").read_text())
    assert state["iteration"] == 2 and len(state["history"]) == 2
    assert not [p for p in os.listdir(tmp_path / "resumed") if p.startswith(".")]   # no temp dirs left

    resumed = _craft_ckpt(ds, tmp_path / "resumed", max_iters=3)
    assert resumed.config.stats["history"] == full.config.stats["history"]
    np.testing.assert_array_equal(resumed.steps, full.steps)

    again = _craft_ckpt(ds, tmp_path / "resumed", max_iters=3)   # finished run: loads, does no more rounds
    assert again.config.stats["rounds"] == 3
    np.testing.assert_array_equal(again.steps, full.steps)


def test_checkpoint_killed_between_its_two_files_resumes_from_the_tensors(ds, tmp_path):
    """The progress lives in state.safetensors' own metadata: a kill after its rename but before state.json's
    (simulated by putting back the previous state.json) resumes at the round the tensors belong to."""
    full = _craft_ckpt(ds, tmp_path / "full", max_iters=3)
    ck = tmp_path / "ck"
    _craft_ckpt(ds, ck, max_iters=1, min_iters=1)
    stale = (ck / "state.json").read_text()
    _craft_ckpt(ds, ck, max_iters=2, min_iters=1)
    (ck / "state.json").write_text(stale)                  # the tensors say round 2, the JSON round 1
    resumed = _craft_ckpt(ds, ck, max_iters=3)
    assert resumed.config.stats["history"] == full.config.stats["history"]
    np.testing.assert_array_equal(resumed.steps, full.steps)


def test_checkpoint_extends_with_more_rounds(ds, tmp_path):
    two = _craft_ckpt(ds, tmp_path / "ck", min_iters=1, max_iters=2)
    three = _craft_ckpt(ds, tmp_path / "ck", min_iters=1, max_iters=3)
    hist = three.config.stats["history"]
    assert len(hist) == 3 and hist[:2] == two.config.stats["history"]


def test_checkpoint_with_other_options_or_data_is_refused(ds, tmp_path):
    _craft_ckpt(ds, tmp_path / "ck", max_iters=1, min_iters=1)
    with pytest.raises(ProtectionError, match=r"checkpoint_dir=.*other options.*fresh directory"):
        _craft_ckpt(ds, tmp_path / "ck", max_iters=1, min_iters=1, steps=3)
    with pytest.raises(ProtectionError, match="checkpoint_dir"):
        craft(ds.select(range(30)), "em", mode="classwise", checkpoint_dir=str(tmp_path / "ck"),
              **{**FAST, "max_iters": 1, "min_iters": 1})


def test_checkpoint_of_other_pixels_under_the_same_ids_is_refused(tmp_path):
    """Same row ids (an id column) and labels, other images (re-encoded, another revision): not their checkpoint."""
    ids = [f"img-{i}" for i in range(40)]
    _craft_ckpt(build_dataset(seed=0).add_column("id", ids), tmp_path / "ck", max_iters=1, min_iters=1)
    with pytest.raises(ProtectionError, match="other options or other data"):
        _craft_ckpt(build_dataset(seed=1).add_column("id", ids), tmp_path / "ck", max_iters=2, min_iters=1)


def test_checkpoint_file_without_a_state_record_is_refused_not_overwritten(tmp_path):
    from safetensors.torch import save_file

    ck = tmp_path / "ck"
    ck.mkdir()
    save_file({"x": torch.zeros(2)}, str(ck / "state.safetensors"))     # someone else's file
    before = (ck / "state.safetensors").read_bytes()
    with pytest.raises(ProtectionError, match="did not write"):
        _craft_ckpt(build_dataset(), ck, max_iters=1, min_iters=1)
    assert (ck / "state.safetensors").read_bytes() == before


def test_damaged_checkpoint_file_is_a_clear_error(tmp_path):
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "state.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ProtectionError, match="state.safetensors cannot be read"):
        _craft_ckpt(build_dataset(), ck, max_iters=1, min_iters=1)


def test_weights_digest_ignores_an_ensembles_calibration():
    from hf_unlearnable.methods._checkpoint import _weights_digest
    from hf_unlearnable.surrogates import Surrogate, SurrogateConfig, SurrogateEnsemble

    torch.manual_seed(0)
    members = [Surrogate(SurrogateConfig(arch="convnet", width=8, num_classes=10)) for _ in range(2)]
    ens = SurrogateEnsemble(members).eval()
    before = _weights_digest(ens)
    ens.calibrate(torch.rand(4, 3, 32, 32))
    assert _weights_digest(ens) == before
    with torch.no_grad():
        next(ens.parameters()).add_(1e-3)
    assert _weights_digest(ens) != before


# -- per-batch form ----------------------------------------------------------------------------------------------
def test_per_batch_em_lowers_the_surrogate_loss(ds, tiny_surrogate_dir):
    sur = load_surrogate(tiny_surrogate_dir)
    out = ds.map(protect(method="em", surrogate=tiny_surrogate_dir, steps=5), batched=True, batch_size=16)
    y = torch.tensor(ds["label"])

    def loss(arrays):
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255
        return _loss(sur.eval(), x, y)

    assert loss(stored_arrays(out)) < loss(stored_arrays(ds))


def test_em_random_start_is_seeded_per_row(ds, tiny_surrogate_dir):
    def run(seed, batch_size):
        t = protect(method="em", surrogate=tiny_surrogate_dir, steps=1, random_start=True, seed=seed)
        return [a.tobytes() for a in stored_arrays(ds.map(t, batched=True, batch_size=batch_size))]

    assert run(0, 8) == run(0, 8)
    assert run(0, 8) != run(1, 8)


@pytest.mark.skipif(not (DEFAULT_DIR / WEIGHTS_NAME).exists(),
                    reason=f"the bundled default surrogate ({DEFAULT_DIR / WEIGHTS_NAME}) has not been trained yet "
                           "(hub_scripts/train_surrogate.py)")
def test_per_batch_em_with_bundled_default_surrogate(cifar_slice):
    data = cifar_slice.select(range(40))
    out = data.map(protect(method="em", steps=3), batched=True, batch_size=16, with_indices=True)
    sur = load_surrogate(None)
    assert sur.num_classes == 10
    before, after = stored_arrays(data), stored_arrays(out)
    assert max(np.abs(a.astype(int) - b.astype(int)).max() for a, b in zip(before, after)) <= 8
    assert out["label"] == data["label"]
    y = torch.tensor(data["label"])

    def loss(arrays):
        return _loss(sur.eval(), torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255, y)

    assert loss(after) < loss(before)


# -- class-wise update -------------------------------------------------------------------------------------------
def test_classwise_sign_step_moves_each_pattern_by_its_rows_summed_gradient():
    """One step: each class present moves by step_size * sign(sum of its rows' gradients) (clipped to epsilon);
    classes absent from the batch keep their pattern."""
    from hf_unlearnable.methods.em import pgd_min_classwise

    torch.manual_seed(0)
    model = build("convnet", 3, 8).eval()
    x = torch.rand(6, 3, 16, 16) * 0.5 + 0.25
    y = torch.tensor([0, 2, 0, 2, 2, 0])
    start = torch.zeros(3, 3, 16, 16)
    start[1] = 0.01
    eps, step = 8 / 255, 2 / 255
    out = pgd_min_classwise(model, x, y, start, epsilon=eps, step_size=step, steps=1, bf16=False)
    xg = x.clone().requires_grad_(True)
    F.cross_entropy(model(xg), y, reduction="sum").backward()
    for k in (0, 2):
        want = (-step * xg.grad[y == k].sum(0).sign()).clamp(-eps, eps)
        torch.testing.assert_close(out[k], want)
    torch.testing.assert_close(out[1], start[1])
    # after more steps every pattern sits in the box, much of it at its edge
    out = pgd_min_classwise(model, x, y, start, epsilon=eps, step_size=step, steps=8, bf16=False)
    assert out.abs().max() <= eps + 1e-7 and (out[0].abs() > eps - 1e-6).float().mean() > 0.3


def test_classwise_default_fits_all_rows_of_a_small_set(tiny_ds):
    noise = craft(tiny_ds, "em", **{**EM_FAST, "mode": "classwise"})
    assert noise.config.stats["rows_fitted"] == tiny_ds.num_rows
    assert craft(tiny_ds, "em", **{**EM_FAST, "mode": "classwise", "subset": 0.5}).config.stats["rows_fitted"] < 40
    mean = craft(tiny_ds, "em", **{**EM_FAST, "mode": "classwise", "class_step": "mean"})
    assert not np.array_equal(mean.steps, noise.steps)
