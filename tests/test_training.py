"""The one trainer: adversarial training (robust surrogates) keeps its radius and trains."""

import pytest
import torch
import torch.nn.functional as F

from hf_unlearnable.surrogates.nets import build
from hf_unlearnable.training import TrainConfig, fit, linf_adversarial


def _toy(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return x, y


@pytest.mark.parametrize("steps", [1, 3])
def test_adversarial_examples_stay_in_the_ball_raise_the_loss_and_leave_weights_alone(steps):
    torch.manual_seed(0)
    model = build("convnet", 10, 16).eval()
    x, y = _toy()
    eps = 4 / 255
    x_adv = linf_adversarial(model, x, y, eps, steps, torch.Generator().manual_seed(1), bf16=False)
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert all(p.grad is None for p in model.parameters())
    with torch.no_grad():
        assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y)
    again = linf_adversarial(model, x, y, eps, steps, torch.Generator().manual_seed(1), bf16=False)
    assert torch.equal(x_adv, again)


def test_fit_with_adversarial_training_is_deterministic_and_differs_from_standard_training():
    x, y = _toy(32)
    images = (x * 255).round().to(torch.uint8)

    def trained(**kw):
        torch.manual_seed(0)
        model = build("convnet", 10, 16)
        fit(model, images, y, TrainConfig(epochs=1, batch_size=16, bf16=False, **kw), progress=False)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    robust = trained(adversarial_epsilon=2 / 255)
    assert torch.equal(robust, trained(adversarial_epsilon=2 / 255))
    assert not torch.equal(robust, trained())


@pytest.mark.parametrize("kw", [{"adversarial_epsilon": -0.1}, {"adversarial_epsilon": 8.0},
                                {"adversarial_steps": 0}])
def test_bad_adversarial_options_are_refused(kw):
    with pytest.raises(ValueError, match="adversarial"):
        TrainConfig(**kw)


def test_step_trainer_state_round_trip_continues_exactly():
    """state_tensors / load_state_tensors carry the weights and the momentum: a trainer restored from them takes
    the same next steps as the one that kept going (what a resumed em craft relies on)."""
    from hf_unlearnable.training import StepTrainer

    torch.manual_seed(0)
    x, y = torch.rand(16, 3, 16, 16), torch.randint(0, 4, (16,))
    first = StepTrainer(build("convnet", 4, 8), bf16=False)
    for _ in range(2):
        first.step(x, y)
    saved = {k: v.clone() for k, v in first.state_tensors().items()}
    assert any(k.startswith("momentum.") for k in saved)
    torch.manual_seed(1)
    second = StepTrainer(build("convnet", 4, 8), bf16=False)
    second.load_state_tensors(saved)
    for _ in range(2):
        assert first.step(x, y) == second.step(x, y)
    for k, v in first.state_tensors().items():
        assert torch.equal(v, second.state_tensors()[k])
