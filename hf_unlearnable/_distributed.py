"""Splitting a whole-set craft across processes started by `accelerate launch` (or torchrun).

A craft run in one plain process sees a group of one and never imports accelerate or touches torch.distributed.
Started as several processes (`accelerate launch --multi_gpu --num_processes 4 ...` on GPUs, or
`torchrun --nproc_per_node 2 ...` on CPUs), each process takes its share of the minibatches of a pass and the
perturbed rows are summed across processes after it, so every process ends the pass with the same tensor and the
result does not depend on how many processes ran it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class ProcessGroup:
    rank: int = 0
    size: int = 1
    device: torch.device | None = None   # this process's device (its own GPU); None: training.device()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mine(self, items: list) -> list[int]:
        """Indices of `items` this process handles: a fixed round-robin share."""
        return list(range(self.rank, len(items), self.size))

    def share_rows(self, values: torch.Tensor, mine: np.ndarray, updated: np.ndarray) -> None:
        """After a pass: rows `updated` were changed, each by exactly one process (`mine` are this process's).
        Sums every process's rows into all copies. Exact: each row's sum is its value plus zeros."""
        if self.size == 1:
            return
        import torch.distributed as dist

        part = torch.zeros_like(values)
        part[mine] = values[mine]
        buffer = part.to(self.device) if self.device is not None else part
        dist.all_reduce(buffer)
        values[updated] = buffer.cpu()[updated]

    def largest(self, value: torch.Tensor) -> torch.Tensor:
        """The largest of every process's `value` (a scalar tensor); exact, so as good as computing it in one."""
        if self.size == 1:
            return value
        import torch.distributed as dist

        buffer = value.detach().clone().reshape(1).to(self.device)
        dist.all_reduce(buffer, op=dist.ReduceOp.MAX)
        return buffer.reshape(()).to(value.device)

    def wait(self) -> None:
        if self.size > 1:
            import torch.distributed as dist

            dist.barrier()


def launched_processes() -> int:
    """How many processes the launcher started (WORLD_SIZE, set by accelerate launch and torchrun); 1 if none."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def process_group() -> ProcessGroup:
    """The processes this craft runs in: one, unless launched with WORLD_SIZE > 1, where accelerate's PartialState
    sets up torch.distributed (NCCL on CUDA, gloo on CPU) and gives each process its device."""
    if launched_processes() <= 1:
        return ProcessGroup()
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    return ProcessGroup(state.process_index, state.num_processes, state.device)
