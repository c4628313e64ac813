"""Timing tools of benchmarks/speed.py: a network's limit (images/s of one bare step kind) and a timer of chosen
library functions."""

from __future__ import annotations

import inspect
import time


def sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()


def arch_key(arch: str, width: int | None) -> str:
    from hf_unlearnable.surrogates.nets import ARCHITECTURES

    width = width or inspect.signature(ARCHITECTURES[arch]).parameters["width"].default
    return f"{arch}-w{width}"


def dtype_of(bf16: bool) -> str:
    """The dtype a library path with this bf16 flag really runs in here (autocast is a no-op where not fast)."""
    from hf_unlearnable.training import device, fast_bf16

    return "bf16" if bf16 and fast_bf16(device().type) else "fp32"


def measure(arch: str, width: int | None, batch: int, kind: str, dtype: str, budget: float, warmup: int = 2,
            windows: int = 3) -> dict:
    """Images/s of one step kind: the best of `windows` timed windows (each at least one step and budget / windows
    seconds) after `warmup` steps. The best, as a limit: another process on the machine only ever slows a window."""
    import torch
    import torch.nn.functional as F

    from hf_unlearnable.surrogates.nets import build
    from hf_unlearnable.training import autocast, device, memory_format

    dev = device()
    torch.manual_seed(0)
    fmt = memory_format(dev)        # the library's choice, for both dtypes
    model = build(arch, 10, width).to(dev).to(memory_format=fmt)
    x = torch.rand(batch, 3, 32, 32, device=dev).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,), device=dev)
    frozen = kind in ("input_only", "forward")
    model.train(not frozen)
    for p in model.parameters():
        p.requires_grad_(not frozen)
    bf16 = dtype == "bf16"

    def step():
        if kind == "forward":
            with torch.no_grad(), autocast(dev, bf16):
                model(x)
            return
        xi = x.detach().requires_grad_(kind != "train")
        with autocast(dev, bf16):
            loss = F.cross_entropy(model(xi).float(), y)
        if kind == "input_only":
            torch.autograd.grad(loss, xi)
        else:
            loss.backward()
            model.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    rates = []
    for _ in range(windows):
        sync(dev)
        t0, steps = time.perf_counter(), 0
        while steps < 1 or time.perf_counter() - t0 < budget / windows:
            step()
            sync(dev)
            steps += 1
        rates.append(steps * batch / (time.perf_counter() - t0))
    return {"images_per_s": max(rates), "batch": batch, "window_images_per_s": [round(r) for r in rates],
            "memory_format": str(fmt).replace("torch.", "")}


class Timed:
    """Wall seconds spent inside chosen functions, patched for one craft and restored after (nested ones count in
    both)."""

    def __init__(self, dev):
        self.dev, self.seconds, self.calls, self._undo = dev, {}, {}, []

    def wrap(self, owner, attr: str, label: str) -> None:
        had, old, fn = attr in vars(owner), vars(owner).get(attr), getattr(owner, attr)

        def timed(*args, **kwargs):
            sync(self.dev)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                sync(self.dev)
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - t0
                self.calls[label] = self.calls.get(label, 0) + 1

        setattr(owner, attr, timed)
        self._undo.append(lambda: setattr(owner, attr, old) if had else delattr(owner, attr))

    def restore(self) -> None:
        while self._undo:
            self._undo.pop()()
