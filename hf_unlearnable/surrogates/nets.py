"""Small CIFAR-sized networks. Each exposes `features(x)` (penultimate, pooled) and `forward(x)` (logits).

Inputs are float [0, 1] pixels, NCHW; no normalisation outside the model (methods.md §6.4: epsilon stays in
pixel units).
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from ..errors import ProtectionError


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Net(nn.Module):
    """A pooled feature extractor (`features`) and a linear head (`fc`)."""

    fc: nn.Linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both from one forward pass (bayes' ascent needs the two)."""
        z = self.features(x)
        return z, self.fc(z)


class ConvNet(_Net):
    """VGG-style 6 conv-BN-ReLU net (widths w, 2w, 4w); 73k parameters at the default w=16, 0.29M at w=32.

    The CPU workhorse. Measured on the 2-core AVX2 project machine (fp32, batch 256): w=16 trains at ~1,500 img/s,
    w=32 at ~440 img/s (cpu-training.md's 3k img/s for w=32 needs native bf16)."""

    def __init__(self, num_classes: int = 10, width: int = 16):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            _conv_bn(3, w), _conv_bn(w, w), nn.MaxPool2d(2),
            _conv_bn(w, 2 * w), _conv_bn(2 * w, 2 * w), nn.MaxPool2d(2),
            _conv_bn(2 * w, 4 * w), _conv_bn(4 * w, 4 * w), nn.MaxPool2d(2),
        )
        self.fc = nn.Linear(4 * w, num_classes)
        self.feature_dim = 4 * w

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < 8:   # three 2x2 poolings: smaller inputs fail deep inside torch
            raise ProtectionError(f"the convnet needs images of at least 8x8 pixels; these are "
                                  f"{x.shape[-2]}x{x.shape[-1]}. Resize them first (e.g. to 32x32), or pick the "
                                  "resnet18 architecture (surrogate_arch=, victim=) for small images.")
        return F.adaptive_max_pool2d(self.body(x), 1).flatten(1)


class _Basic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.short = nn.Sequential()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.b1(self.c1(x)))
        return F.relu(self.b2(self.c2(out)) + self.short(x))


class ResNet18(_Net):
    """CIFAR ResNet-18 (3x3 stem, layers 2-2-2-2), the papers' victim; width 64 is the standard model."""

    def __init__(self, num_classes: int = 10, width: int = 64):
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True))
        layers, cin = [], w
        for i, cout in enumerate((w, 2 * w, 4 * w, 8 * w)):
            stride = 1 if i == 0 else 2
            layers += [_Basic(cin, cout, stride), _Basic(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(8 * w, num_classes)
        self.feature_dim = 8 * w

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1).flatten(1)


ARCHITECTURES = {"convnet": ConvNet, "resnet18": ResNet18}


MAX_WIDTH = 256          # 4x the standard ResNet-18's 64: wider nets do not fit a CPU or one GPU's crafting budget
MAX_CLASSES = 100_000


def check_size(width, num_classes, where: str = "") -> None:
    """A network's sizes, checked before anything is allocated from them (they may come from a downloaded
    config.json or a label column)."""
    if width is not None and (isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= MAX_WIDTH):
        raise ProtectionError(f"{where}width={width!r} must be an integer from 1 to {MAX_WIDTH} (the network's base "
                              "width), or None for the architecture's default.")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 1 <= num_classes <= MAX_CLASSES:
        raise ProtectionError(f"{where}num_classes={num_classes!r} must be an integer from 1 to {MAX_CLASSES:,}.")


def build(arch: str, num_classes: int, width: int | None = None) -> nn.Module:
    if arch not in ARCHITECTURES:
        raise ProtectionError(f"unknown architecture {arch!r}; available: {sorted(ARCHITECTURES)}.")
    check_size(width, num_classes)
    kwargs = {"num_classes": num_classes}
    if width is not None:
        kwargs["width"] = width
    return ARCHITECTURES[arch](**kwargs)
