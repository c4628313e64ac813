"""Bayes-error optimisation: the kernel estimator as its own unit (brute-force reference, gradcheck, known cases,
underflow, chunking), the ascent (raises the estimate, stays in the box), the per-batch form's single-class rule,
and the whole-set craft (before/after estimate, resume). The transform invariants are in tests/test_transform.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_unlearnable import ProtectionError, craft, protect
from hf_unlearnable.methods import METHODS
from hf_unlearnable.methods.bayes import BayesConfig, BayesErrorOptimisation, bayes_error, stratified_batches
from tests.conftest import FAST_OPTIONS, build_dataset, stored_arrays

EPS = 8 / 255


def reference_bayes_error(z: np.ndarray, y: np.ndarray, k: int, sigma: float) -> float:
    """Brute force, straight from methods.md §1.3 (float64, no chunking; exp without a shift)."""
    n = len(z)
    errs = []
    for i in range(n):
        s = np.array([0.0 if j == i else np.exp(-np.sum((z[i] - z[j]) ** 2) / (2 * sigma ** 2)) for j in range(n)])
        p = np.array([s[y == c].sum() for c in range(k)]) / s.sum()
        errs.append(1 - p.max())
    return float(np.mean(errs))


def _points(n=60, d=5, k=3, seed=0, spread=1.0):
    g = np.random.default_rng(seed)
    y = np.arange(n) % k
    z = g.normal(size=(n, d)) * spread
    return z, y


@pytest.mark.parametrize("chunk", [1, 7, 512])
@pytest.mark.parametrize("sigma", [0.3, 1.0, 3.0])
def test_estimator_equals_brute_force_reference(chunk, sigma):
    z, y = _points()
    got = bayes_error(torch.tensor(z), torch.tensor(y), 3, sigma=sigma, chunk_size=chunk)
    assert float(got) == pytest.approx(reference_bayes_error(z, y, 3, sigma), abs=1e-10)


def test_estimator_gradcheck():
    z, y = _points(n=12, d=3, k=3)
    zt = torch.tensor(z, requires_grad=True)
    yt = torch.tensor(y)
    assert torch.autograd.gradcheck(lambda t: bayes_error(t, yt, 3, sigma=1.0, chunk_size=5), (zt,),
                                    eps=1e-6, atol=1e-6)


def test_gradient_is_of_the_mean_and_chunking_does_not_change_it():
    """Value and gradient on the same scale (§6.10): doubling the data (two copies) keeps both comparable."""
    z, y = _points(n=40, d=4, k=2)
    grads = []
    for chunk in (3, 40):
        zt = torch.tensor(z, requires_grad=True)
        bayes_error(zt, torch.tensor(y), 2, sigma=1.0, chunk_size=chunk).backward()
        grads.append(zt.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-12)
    # finite difference along the gradient direction matches the mean's slope
    zt = torch.tensor(z)
    d = grads[0] / grads[0].norm()
    h = 1e-6
    f = lambda t: float(bayes_error(t, torch.tensor(y), 2, sigma=1.0))  # noqa: E731
    slope = (f(zt + h * d) - f(zt - h * d)) / (2 * h)
    assert slope == pytest.approx(float(grads[0].norm()), rel=1e-4)


def test_well_separated_classes_give_about_zero():
    g = np.random.default_rng(1)
    y = np.arange(90) % 3
    centres = np.eye(3) * 10
    z = centres[y] + g.normal(size=(90, 3)) * 0.1
    assert float(bayes_error(torch.tensor(z), torch.tensor(y), 3, sigma=0.3)) < 1e-6


def test_identical_class_distributions_give_one_minus_one_over_k():
    g = np.random.default_rng(2)
    k, n = 4, 2000
    y = np.arange(n) % k
    z = g.normal(size=(n, 2)) * 0.05          # all classes drawn from one distribution; kernel much wider
    got = float(bayes_error(torch.tensor(z), torch.tensor(y), k, sigma=5.0))
    assert got == pytest.approx(1 - 1 / k, abs=0.02)


def test_no_underflow_on_raw_pixel_scale_distances():
    """Points ~100 apart with sigma 0.3: exp(-d^2/2s^2) is 0 in float64; the estimate must still be the 1-NN
    error (0 here: every point's nearest neighbour shares its class), not the underflowed 1 (§6.11)."""
    g = np.random.default_rng(3)
    y = np.repeat([0, 1], 10)
    z = np.concatenate([g.normal(size=(10, 8)) * 30, 500 + g.normal(size=(10, 8)) * 30])
    zt = torch.tensor(z, dtype=torch.float32, requires_grad=True)
    value = bayes_error(zt, torch.tensor(y), 2, sigma=0.3)
    value.backward()
    assert float(value.detach()) == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(zt.grad).all()


def test_estimator_errors():
    with pytest.raises(ProtectionError, match="at least two points"):
        bayes_error(torch.zeros(1, 3), torch.zeros(1), 2)
    with pytest.raises(ProtectionError, match=r"\[N, D\]"):
        bayes_error(torch.zeros(4), torch.zeros(4), 2)
    with pytest.raises(ProtectionError, match="sigma"):
        bayes_error(torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]), 2, sigma=0)


# -- the method --------------------------------------------------------------------------------------------------
def test_registered_with_a_per_batch_form():
    assert METHODS["bayes"] is BayesErrorOptimisation
    assert BayesErrorOptimisation.per_batch and BayesErrorOptimisation.uses_labels


def test_config_defaults_and_validation():
    cfg = BayesConfig.from_options("bayes")
    assert cfg.step_size == pytest.approx(EPS / 10) and cfg.sigma == 0.3
    for bad in (dict(sigma=0), dict(steps=0), dict(step_size=1.0), dict(refresh_every=-1), dict(subset_size=1),
                dict(targeted_weight=-1.0), dict(augment_draws=-1), dict(augment_draws=1.5), dict(target="far"),
                dict(surrogate_augment="no")):
        with pytest.raises(ProtectionError):
            BayesConfig.from_options("bayes", **bad)


def test_ascent_raises_the_estimate_and_stays_in_the_box():
    """Four colour-coded classes the bundled surrogate separates well (estimate ~0): ascent pulls them together."""
    from hf_unlearnable.methods.bayes import _surrogate_outputs, feature_scale

    method = BayesErrorOptimisation(steps=10)
    g = np.random.default_rng(0)
    labels = np.arange(40) % 4
    colours = np.array([[40, 40, 40], [200, 40, 40], [40, 200, 40], [40, 40, 200]])
    images = np.clip(colours[labels][:, None, None, :] + g.normal(0, 40, size=(40, 32, 32, 3)), 0, 255)
    images = images.astype(np.uint8)
    images[:4] = 0                             # rows on the image range's edge: the [0, 1] projection matters
    delta = method.perturb(images, labels, [f"r{i}" for i in range(40)])
    assert delta.shape == images.shape
    assert np.abs(delta).max() <= EPS + 1e-6 and np.abs(delta).max() > EPS / 2
    assert (delta[:4] >= 0).all()
    model = method.surrogate.eval()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    x_adv = (x + torch.from_numpy(delta).permute(0, 3, 1, 2)).clamp(0, 1)
    with torch.no_grad():
        scale = feature_scale(_surrogate_outputs(model, x, 64))
        before = float(bayes_error(_surrogate_outputs(model, x, 64) / scale, torch.tensor(labels), 4))
        after = float(bayes_error(_surrogate_outputs(model, x_adv, 64) / scale, torch.tensor(labels), 4))
    assert after > before + 0.05


def test_bf16_surrogate_pass_is_close_to_fp32_and_leaves_the_surrogate_alone():
    """The ascent's bf16 surrogate pass (where the hardware runs bf16 natively; fp32 elsewhere) returns fp32
    outputs close to the fp32 ones, gradients of the same direction, and never converts the (shared) surrogate."""
    from hf_unlearnable.methods.bayes import _surrogate_outputs

    model = BayesErrorOptimisation().surrogate.eval()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(24, 3, 32, 32, generator=torch.Generator().manual_seed(1), requires_grad=True)
    grads = {}
    for bf16 in (False, True):
        for logits in (False, True):
            out = _surrogate_outputs(model, x, 10, bf16, logits=logits)
            out = out[1] if logits else out                  # logits=True: (features, logits)
            assert out.dtype == torch.float32 and out.shape == (24, 10 if logits else model.model.feature_dim)
            grads[bf16, logits] = torch.autograd.grad(out.pow(2).sum(), x)[0]
            if bf16:
                ref = _surrogate_outputs(model, x, 10, False, logits=logits)
                ref = ref[1] if logits else ref
                assert (out - ref).norm() <= 0.05 * ref.norm()
    for logits in (False, True):
        a, b = grads[False, logits].flatten(), grads[True, logits].flatten()
        assert float(a @ b / (a.norm() * b.norm())) > 0.9
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    assert all(p.is_contiguous() for p in model.parameters())
    with pytest.raises(ProtectionError, match="bf16"):
        BayesConfig.from_options("bayes", bf16="yes")


def test_single_class_batch_is_refused_with_the_fix(tiny_surrogate_dir):
    ds = build_dataset(labels=[3] * 8, n=8)
    with pytest.raises(ProtectionError, match="single class.*batch_size"):
        ds.map(protect(method="bayes", surrogate=tiny_surrogate_dir, steps=1), batched=True)


def test_per_batch_same_partition_same_bytes(tiny_ds, tiny_surrogate_dir):
    t = protect(method="bayes", surrogate=tiny_surrogate_dir, steps=2)
    a = stored_arrays(tiny_ds.map(t, batched=True, batch_size=20, load_from_cache_file=False))
    b = stored_arrays(tiny_ds.map(t, batched=True, batch_size=20, load_from_cache_file=False))
    assert all(np.array_equal(p, q) for p, q in zip(a, b))


def test_augment_draws_are_seeded_per_batch_and_change_the_noise(tiny_ds, tiny_surrogate_dir):
    """Averaging over crop+flips is a different objective (other bytes), still deterministic and in the box."""
    runs = [stored_arrays(tiny_ds.map(protect(method="bayes", surrogate=tiny_surrogate_dir, steps=2, **kw),
                                      batched=True, batch_size=20, load_from_cache_file=False))
            for kw in (dict(augment_draws=2), dict(augment_draws=2), dict(augment_draws=0))]
    assert all(np.array_equal(p, q) for p, q in zip(runs[0], runs[1]))
    assert not all(np.array_equal(p, q) for p, q in zip(runs[0], runs[2]))
    originals = stored_arrays(tiny_ds)
    assert max(np.abs(p.astype(int) - o.astype(int)).max() for p, o in zip(runs[0], originals)) <= 8


def test_craft_with_augment_draws_resumes_to_the_same_bytes(tmp_path):
    ds = build_dataset(n=40)
    opts = dict(FAST_OPTIONS["bayes"], refresh_every=0, augment_draws=2)
    straight = craft(ds, "bayes", **{**opts, "passes": 2})
    ckpt = str(tmp_path / "ckpt")
    craft(ds, "bayes", checkpoint_dir=ckpt, **{**opts, "passes": 1})
    resumed = craft(ds, "bayes", checkpoint_dir=ckpt, **{**opts, "passes": 2})
    assert np.array_equal(resumed.steps, straight.steps)


def test_clean_anchors_are_craft_only_and_need_two_minibatches(tiny_ds, tiny_surrogate_dir):
    with pytest.raises(ProtectionError, match="craft"):
        tiny_ds.map(protect(method="bayes", surrogate=tiny_surrogate_dir, steps=1, clean_anchors=True), batched=True)
    with pytest.raises(ProtectionError, match="at least 4 rows"):
        craft(build_dataset(n=3, labels=[0, 1, 0]), "bayes", clean_anchors=True, **FAST_OPTIONS["bayes"])


def test_clean_anchors_are_fixed_points_of_the_estimate():
    """Anchors change the objective (the union's estimate) but never move: only the minibatch gets a gradient."""
    from hf_unlearnable.methods.bayes import _surrogate_outputs, feature_scale

    method = BayesErrorOptimisation()
    g = torch.Generator().manual_seed(0)
    x, xa = torch.rand(12, 3, 32, 32, generator=g), torch.rand(12, 3, 32, 32, generator=g)
    y = torch.arange(12) % 3
    model = method.surrogate.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    scale = feature_scale(_surrogate_outputs(model, x, 64))
    xa_before = xa.clone()
    plain_grad, plain = method._ascent_direction(model, x, y, 10, scale)
    grad, value = method._ascent_direction(model, x, y, 10, scale, anchors=(xa, y.flip(0)))
    assert grad.shape == x.shape and torch.equal(xa, xa_before)
    assert value != pytest.approx(plain) and not torch.allclose(grad, plain_grad)
    bf16 = method.config.bf16          # the ascent's surrogate pass (bf16 where the CPU has it natively)
    z = torch.cat([_surrogate_outputs(model, x, 64, bf16), _surrogate_outputs(model, xa, 64, bf16)]) / scale
    assert value == pytest.approx(float(bayes_error(z, torch.cat([y, y.flip(0)]), 10)), rel=1e-5)


def test_craft_with_clean_anchors_is_seeded_in_the_box_and_differs(tmp_path):
    ds = build_dataset(n=40)
    opts = dict(FAST_OPTIONS["bayes"], refresh_every=0)
    a, b = (craft(ds, "bayes", clean_anchors=True, **opts) for _ in range(2))
    plain = craft(ds, "bayes", clean_anchors=False, **opts)
    assert np.array_equal(a.steps, b.steps) and not np.array_equal(a.steps, plain.steps)
    assert np.abs(a.steps.astype(int)).max() <= 8 and len(a) == 40
    ckpt = str(tmp_path / "ckpt")
    craft(ds, "bayes", checkpoint_dir=ckpt, clean_anchors=True, **{**opts, "passes": 1})
    resumed = craft(ds, "bayes", checkpoint_dir=ckpt, clean_anchors=True, **opts)
    assert np.array_equal(resumed.steps, a.steps)


def test_options_left_at_none_are_chosen_per_form_and_recorded(tiny_surrogate_dir):
    """craft() takes CRAFT_DEFAULTS (the strongest measured setting), the per-batch form BATCH_DEFAULTS (no clean
    anchors: a batch has no other rows); an explicit value always wins; the Noise records the values used, never
    None."""
    from hf_unlearnable.methods.bayes import BATCH_DEFAULTS, CRAFT_DEFAULTS
    from hf_unlearnable.surrogates import load_surrogate

    method = BayesErrorOptimisation()
    cifar = [f"c{k}" for k in range(10)]
    crafted = method._resolved("craft", 40, 10, None)
    assert {k: getattr(crafted, k) for k in CRAFT_DEFAULTS} == CRAFT_DEFAULTS and crafted.passes == 20
    batch = method._resolved("batch", 40, 10)
    assert {k: getattr(batch, k) for k in BATCH_DEFAULTS} == BATCH_DEFAULTS
    assert (batch.targeted_weight, batch.augment_draws, batch.clean_anchors) == (1.0, 2, False)
    assert method._resolved("batch", 40, 4).targeted_weight == 1.0    # a batch may lack some of the classes
    assert method._resolved("batch", 40, 11).targeted_weight == 0     # labels the surrogate has no class for
    assert method.config.targeted_weight is None          # resolving never changes the user's config
    assert method._resolved("craft", 3, 10, None).clean_anchors is False          # too few rows to anchor
    # a surrogate whose classes are not the data's gets no targeted term by default, but an explicit one stays
    assert method._resolved("craft", 40, 3, None).targeted_weight == 0
    assert method._resolved("craft", 40, 10, cifar).targeted_weight == 0
    assert method._resolved("craft", 40, 10, load_surrogate(None).config.class_names).targeted_weight == 1.0
    explicit = BayesErrorOptimisation(targeted_weight=0.5, augment_draws=0, clean_anchors=False)
    got = explicit._resolved("craft", 40, 3, None)
    assert (got.targeted_weight, got.augment_draws, got.clean_anchors) == (0.5, 0, False)

    ds = build_dataset(n=24)
    noise = craft(ds, "bayes", surrogate=tiny_surrogate_dir, passes=1, subset_size=8)
    recorded = noise.config.method_config
    assert recorded["clean_anchors"] is True and recorded["augment_draws"] == 2
    assert recorded["targeted_weight"] == 1.0 and recorded["passes"] == 1


class _FixedSoftmax(torch.nn.Module):
    """A 'model' whose logits are a fixed table per true class (read from the first pixel): known confusions."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.as_tensor(table, dtype=torch.float32)

    def forward(self, x):
        return self.table[x[:, 0, 0, 0].round().long()]


def test_nearest_class_map_takes_the_most_favoured_other_class_and_skips_absent_classes():
    from hf_unlearnable.methods.bayes import nearest_class_map

    table = [[5.0, 1.0, 3.0, 0.0], [2.0, 5.0, 0.0, 1.0], [0.0, 4.0, 5.0, 1.0], [0.0, 0.0, 0.0, 0.0]]
    labels = torch.tensor([0, 0, 1, 2, 2, 1])            # class 3 has no rows
    x = torch.zeros(6, 3, 2, 2)
    x[:, 0, 0, 0] = labels.float()
    model = _FixedSoftmax(table)
    whole = nearest_class_map(model, [x], labels, 4)
    assert whole.tolist() == [2, 0, 1, 0]                # 0 -> 2, 1 -> 0, 2 -> 1; absent class 3 -> 0 (= 3 + 1)
    assert torch.equal(nearest_class_map(model, (x[s:s + 4] for s in (0, 4)), labels, 4), whole)   # batched


def test_nearest_target_is_recorded_and_aims_the_targeted_term_there(tiny_surrogate_dir):
    """target='nearest': the map comes from the surrogate on the clean rows, is recorded in the Noise, and the
    targeted term pushes each row toward it (the surrogate's probability of the mapped class rises)."""
    from hf_unlearnable.methods.bayes import nearest_class_map
    from hf_unlearnable.surrogates import load_surrogate

    ds = build_dataset(n=40)
    opts = dict(surrogate=tiny_surrogate_dir, passes=2, subset_size=20, augment_draws=0, clean_anchors=False,
                targeted_weight=4.0, step_size=EPS / 2)
    near = craft(ds, "bayes", target="nearest", **opts)
    again = craft(ds, "bayes", target="nearest", **opts)
    nxt = craft(ds, "bayes", **opts)
    assert np.array_equal(near.steps, again.steps) and np.abs(near.steps.astype(int)).max() <= 8
    assert near.config.method_config["target"] == "nearest" and nxt.config.method_config["target"] == "next"

    sur = load_surrogate(tiny_surrogate_dir).eval()
    clean = torch.from_numpy(np.stack(stored_arrays(ds))).permute(0, 3, 1, 2).float() / 255
    y = torch.tensor(ds["label"])
    expected = nearest_class_map(sur, [clean], y, 10)
    assert near.config.stats["target_map"] == expected.tolist()
    assert nxt.config.stats["target_map"] == [(k + 1) % 10 for k in range(10)]
    assert all(t != k for k, t in enumerate(expected.tolist()))
    protected = (clean + torch.from_numpy(near.steps.astype(np.float32)).permute(0, 3, 1, 2) / 255).clamp(0, 1)
    with torch.no_grad():
        before = torch.softmax(sur(clean), 1)[torch.arange(40), expected[y]]
        after = torch.softmax(sur(protected), 1)[torch.arange(40), expected[y]]
    assert float(after.mean()) > float(before.mean())


def test_stratified_batches_partition_all_rows_with_every_class():
    labels = np.repeat(np.arange(5), [40, 30, 20, 20, 10])
    batches = stratified_batches(labels, 24, np.random.default_rng(0))
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == list(range(len(labels)))
    assert all(len(np.unique(labels[b])) == 5 for b in batches)


def test_craft_records_a_rising_estimate_and_resumes(tmp_path):
    ds = build_dataset(n=60)
    opts = dict(FAST_OPTIONS["bayes"], refresh_every=0)
    noise = craft(ds, "bayes", **{**opts, "passes": 3})
    stats = noise.config.stats
    assert noise.kind == "samplewise" and len(noise) == 60
    assert stats["bayes_error_after"] > stats["bayes_error_before"]
    # interrupted after 2 passes, then extended to 3: same bytes as a straight 3-pass run
    ckpt = tmp_path / "ckpt"
    craft(ds, "bayes", checkpoint_dir=str(ckpt), **{**opts, "passes": 2})
    resumed = craft(ds, "bayes", checkpoint_dir=str(ckpt), **{**opts, "passes": 3})
    assert np.array_equal(resumed.steps, noise.steps)
    with pytest.raises(ProtectionError, match="other options"):
        craft(ds, "bayes", checkpoint_dir=str(ckpt), **{**opts, "passes": 3, "sigma": 0.5})


def test_resume_against_other_surrogate_weights_is_refused(tmp_path):
    """Two surrogates of one name (here: in-memory, no name) but other weights: the checkpoint is not resumed."""
    from hf_unlearnable.surrogates import Surrogate, SurrogateConfig

    ds = build_dataset(n=40)
    opts = dict(FAST_OPTIONS["bayes"], refresh_every=0, passes=1)
    first, second = (Surrogate(SurrogateConfig(arch="convnet", width=8, num_classes=10), name_or_path="")
                     for _ in range(2))
    ckpt = str(tmp_path / "ckpt")
    craft(ds, "bayes", checkpoint_dir=ckpt, surrogate=first, **opts)
    with pytest.raises(ProtectionError, match="other options"):
        craft(ds, "bayes", checkpoint_dir=ckpt, surrogate=second, **{**opts, "passes": 2})
    craft(ds, "bayes", checkpoint_dir=ckpt, surrogate=first, **{**opts, "passes": 2})    # its own: resumes


def test_craft_with_refresh_resumes_to_the_same_bytes(tmp_path):
    ds = build_dataset(n=40)
    opts = dict(FAST_OPTIONS["bayes"])
    straight = craft(ds, "bayes", **{**opts, "passes": 3})
    ckpt = str(tmp_path / "ckpt")
    craft(ds, "bayes", checkpoint_dir=ckpt, **{**opts, "passes": 2})
    resumed = craft(ds, "bayes", checkpoint_dir=ckpt, **{**opts, "passes": 3})
    assert np.array_equal(resumed.steps, straight.steps)
    assert [h["refreshed"] for h in resumed.config.stats["history"]] == [False, True, True]


def test_refreshed_surrogate_trains_without_augmentation_when_asked():
    """surrogate_augment=False (the BEO code's loop) trains the refreshed surrogate on the plain images: other bytes
    from the refresh on, none before it."""
    ds = build_dataset(n=40)
    opts = dict(FAST_OPTIONS["bayes"])
    with_aug = craft(ds, "bayes", **opts)
    without = craft(ds, "bayes", **{**opts, "surrogate_augment": False})
    assert without.config.method_config["surrogate_augment"] is False
    assert not np.array_equal(with_aug.steps, without.steps)
    first = craft(ds, "bayes", **{**opts, "passes": 1})
    assert np.array_equal(first.steps, craft(ds, "bayes", **{**opts, "passes": 1, "surrogate_augment": False}).steps)


@pytest.mark.parametrize("arch", ["convnet", "resnet18"])
def test_features_and_logits_come_from_one_pass_and_match_the_separate_calls(arch):
    """The targeted term reads the logits of the same forward pass as the kernel's features."""
    from hf_unlearnable.methods.bayes import _surrogate_outputs
    from hf_unlearnable.surrogates import Surrogate, SurrogateConfig

    torch.manual_seed(0)
    sur = Surrogate(SurrogateConfig(arch=arch, width=8, num_classes=10)).eval()
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    calls = []
    handle = next(sur.model.children()).register_forward_pre_hook(lambda mod, args: calls.append(len(args[0])))
    with torch.no_grad():
        z, logits = _surrogate_outputs(sur, x, 4, logits=True)
    handle.remove()
    assert calls == [4, 2]        # one pass through the trunk per slice of 4 rows
    with torch.no_grad():
        assert torch.allclose(z, sur.features(x)) and torch.allclose(logits, sur(x))


def test_transformers_image_classifier_as_feature_surrogate(tmp_path):
    """Features can come from a transformers image classifier (what its head reads), folder or object."""
    from transformers import ViTConfig, ViTForImageClassification

    from hf_unlearnable.surrogates import load_surrogate

    torch.manual_seed(0)
    cfg = ViTConfig(image_size=16, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=1,
                    num_attention_heads=2, intermediate_size=64, num_labels=4)
    ViTForImageClassification(cfg).eval().save_pretrained(tmp_path / "vit")
    ds = build_dataset(n=12, labels=[0, 1, 2, 3] * 3)
    sur = load_surrogate(str(tmp_path / "vit")).eval()
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z, logits = sur.features_and_logits(x)
        assert torch.allclose(z, sur.features(x)) and torch.allclose(logits, sur(x))
    for spec in (str(tmp_path / "vit"), ViTForImageClassification.from_pretrained(tmp_path / "vit")):
        out = ds.map(protect(method="bayes", surrogate=spec, steps=3), batched=True)
        deltas = [np.abs(p.astype(int) - o.astype(int)).max() for p, o in zip(stored_arrays(out), stored_arrays(ds))]
        assert max(deltas) <= 8 and sum(d > 0 for d in deltas) >= 10


def test_an_ensemble_of_surrogates_scales_each_member_and_crafts(tmp_path, tiny_surrogate_dir):
    """surrogate=[a, b]: logits averaged, features side by side with each member's own max-abs scale (so a member
    with larger features does not dominate the kernel), recorded by name in the Noise; mismatched classes refused."""
    from hf_unlearnable.surrogates import Surrogate, SurrogateConfig, SurrogateEnsemble, load_surrogate

    torch.manual_seed(1)
    other = Surrogate(SurrogateConfig(arch="convnet", width=8, num_classes=10,
                                      class_names=load_surrogate(tiny_surrogate_dir).config.class_names))
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(3.0)                       # much larger features than the first member
    other.save_pretrained(tmp_path / "other")
    ens = load_surrogate([tiny_surrogate_dir, str(tmp_path / "other")])
    assert isinstance(ens, SurrogateEnsemble) and ens.num_classes == 10
    x = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ens.eval().calibrate(x)
    whole = ens.scales.clone()
    ens.calibrate(x[s:s + 5] for s in range(0, 16, 5))       # read in batches: the same scales
    assert torch.allclose(ens.scales, whole)
    a, b = ens.members
    with torch.no_grad():
        d = a.features(x).shape[1]
        z = ens.features(x)
        assert z.shape[1] == d + b.features(x).shape[1]
        assert b.features(x).abs().max() > 2 * a.features(x).abs().max()
        assert float(z[:, :d].abs().max()) == pytest.approx(1.0) and float(z[:, d:].abs().max()) == pytest.approx(1.0)
        assert torch.allclose(ens(x), (a(x) + b(x)) / 2, atol=1e-5)
        both = ens.features_and_logits(x)
        assert torch.allclose(both[0], z) and torch.allclose(both[1], ens(x), atol=1e-6)

    ds = build_dataset(n=24)
    noise = craft(ds, "bayes", surrogate=[tiny_surrogate_dir, str(tmp_path / "other")], passes=1, subset_size=8)
    assert noise.config.method_config["surrogate"] == [tiny_surrogate_dir, str(tmp_path / "other")]
    assert np.abs(noise.steps.astype(int)).max() <= 8
    assert noise.config.method_config["targeted_weight"] == 1.0      # the members' classes are the data's

    Surrogate(SurrogateConfig(arch="convnet", width=8, num_classes=3)).save_pretrained(tmp_path / "three")
    with pytest.raises(ProtectionError, match="disagree on the classes"):
        load_surrogate([tiny_surrogate_dir, str(tmp_path / "three")])
    with pytest.raises(ProtectionError, match="at least two"):
        load_surrogate([tiny_surrogate_dir])
