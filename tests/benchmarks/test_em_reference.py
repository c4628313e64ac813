"""Smoke test of benchmarks/em_reference.py against a tiny fake reference checkout (a toolbox.py with
PerturbationTool.min_min_attack of the reference's signature, a models/ResNet.py with a small ResNet18, and a
models/__init__.py that must not run): 8 bundled CIFAR-10 rows, 1 PGD step, one repeat."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import em_reference  # noqa: E402

TOOLBOX = '''
import torch


class PerturbationTool():
    def __init__(self, seed=0, epsilon=0.03137254901, num_steps=20, step_size=0.00784313725):
        self.epsilon, self.num_steps, self.step_size, self.seed = epsilon, num_steps, step_size, seed

    def min_min_attack(self, images, labels, model, optimizer, criterion, random_noise=None, sample_wise=False):
        x = torch.clamp(images + random_noise, 0, 1)
        for _ in range(self.num_steps):
            x = x.detach().requires_grad_(True)
            grad, = torch.autograd.grad(criterion(model(x), labels), x)
            eta = torch.clamp(x.detach() - self.step_size * grad.sign() - images, -self.epsilon, self.epsilon)
            x = torch.clamp(images + eta, 0, 1)
        return x, eta
'''
RESNET = '''
import torch.nn as nn


class ResNet(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.linear = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.linear(self.body(x))


def ResNet18(num_classes=10):
    return ResNet(num_classes)
'''


def test_fake_reference_run_writes_ratios_and_positive_rates(tmp_path):
    ref = tmp_path / "ref"
    (ref / "models").mkdir(parents=True)
    (ref / "toolbox.py").write_text(TOOLBOX)
    (ref / "models" / "ResNet.py").write_text(RESNET)
    # the real one imports mlconfig and torchvision: the benchmark must load models/ResNet.py without it
    (ref / "models" / "__init__.py").write_text("raise ImportError('models/__init__.py must not run')\n")
    out = tmp_path / "out"
    try:
        assert em_reference.main(["--reference", str(ref), "--rows", "8", "--steps", "1", "--repeats", "1",
                                  "--threads", str(torch.get_num_threads()), "--data", "bundled",
                                  "--out-dir", str(out)]) == 0
    finally:
        for name in ("toolbox", "models", "models.ResNet"):
            sys.modules.pop(name, None)
    result = json.loads((out / "em-reference.json").read_text())
    bf16 = result["networks"]["fast_bf16"]
    ratio = result["ratio"]
    assert set(ratio) >= {"library_resnet18_fp32", "library_resnet18_bf16", "default_surrogate"}
    for name in ("library_resnet18_fp32", "default_surrogate", "default_surrogate_fp32") + (
            ("library_resnet18_bf16", "default_surrogate_bf16") if bf16 else ()):
        assert isinstance(ratio[name], float) and math.isfinite(ratio[name]) and ratio[name] > 0, name
    if not bf16:
        assert ratio["library_resnet18_bf16"] is None
    runs = result["images_per_s"]
    assert set(runs) >= {"reference", "library resnet18 fp32", "default surrogate fp32"}
    assert all(len(v) == 1 and v[0] > 0 for v in runs.values())
    assert all(result["medians"][k] > 0 for k in runs)
    assert result["config"]["rows"] == 8 and result["config"]["steps"] == 1
    assert result["environment"]["threads"] >= 1 and result["environment"]["torch"] == torch.__version__
    assert result["networks"]["same_weights"] is False      # the fake net is no ResNet-18
    md = (out / "em-reference.md").read_text()
    assert "| reference |" in md and "| library resnet18 fp32 |" in md
