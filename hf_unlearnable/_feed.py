"""How training.fit and predict feed the device without making the host wait for it at every step.

The uint8 images and their labels move to the device once when they fit (CUDA: under `share` of its free memory; the
CPU: always, a no-op); each batch is then gathered on the device with indices drawn on the host (the trainer's CPU
generator, so the order is the same as before) and sent without blocking. When they do not fit, each batch is
gathered on the host and sent from pinned memory without blocking. A blocking copy (`.to(dev)`) waits for the device
to drain its queue; a non-blocking one from pageable memory may too.
"""

from __future__ import annotations

from typing import Iterator

import torch


def to_device(t: torch.Tensor, dev: torch.device) -> torch.Tensor:
    """`t` on `dev` with no host synchronisation: from pinned memory, non-blocking, on CUDA; as it is elsewhere."""
    if dev.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(dev, non_blocking=True)
    return t.to(dev)


def resident(dev: torch.device, share: float, *tensors: torch.Tensor | None) -> bool:
    """Whether `tensors` should live on `dev` for a whole loop: never when share <= 0 (the per-batch host path),
    always on the CPU or when they are there already, else when they take under `share` of the free device memory."""
    tensors = tuple(t for t in tensors if t is not None)
    if share <= 0:
        return False
    if dev.type != "cuda" or all(t.device.type == "cuda" for t in tensors):
        return True
    need = sum(t.numel() * t.element_size() for t in tensors)
    return need < share * torch.cuda.mem_get_info(dev)[0]


class Feed:
    """The batches of uint8 NCHW `images` and their `labels` on `dev`, in the order a CPU generator draws."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, dev: torch.device, share: float):
        self.dev, self.on_device = dev, resident(dev, share, images, labels)
        self.images, self.labels = (images.to(dev), labels.to(dev)) if self.on_device else (images, labels)

    def batches(self, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
        """One epoch of shuffled row indices, on the device when the rows are (moved once per epoch)."""
        order = torch.randperm(len(self.images), generator=gen)
        if self.on_device:
            order = to_device(order, self.dev)
        for s in range(0, len(order), batch_size):
            yield order[s:s + batch_size]

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The uint8 images and labels of rows `idx` (from `batches`), on the device."""
        if self.on_device:
            return self.images.index_select(0, idx), self.labels.index_select(0, idx)
        return to_device(self.images[idx], self.dev), to_device(self.labels[idx], self.dev)
