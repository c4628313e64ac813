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

from .errors import ProtectionError

_BLOCK_BYTES = 64 * 2**20   # rows are summed across processes in blocks of about this size (bounded GPU memory)


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

    def _reduce(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        import torch.distributed as dist

        buffer = t.to(self.device) if self.device is not None else t
        dist.all_reduce(buffer, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        return buffer.to(t.device)

    def share_rows(self, values: torch.Tensor, mine: np.ndarray, updated: np.ndarray) -> None:
        """After a pass: rows `updated` were changed, each by exactly one process (`mine` are this process's).
        Sums every process's rows into all copies. Exact: each row's sum is its value plus zeros."""
        if self.size == 1:
            return
        part = torch.zeros_like(values)
        part[mine] = values[mine]
        rows = max(1, _BLOCK_BYTES // max(1, part[:1].numel() * part.element_size()))
        for s in range(0, len(part), rows):
            part[s:s + rows] = self._reduce(part[s:s + rows])
        values[updated] = part[updated]

    def largest(self, value: torch.Tensor) -> torch.Tensor:
        """The largest of every process's `value` (a scalar tensor); exact, so as good as computing it in one."""
        if self.size == 1:
            return value
        return self._reduce(value.detach().clone().reshape(1), "max").reshape(())

    def same_as_main(self, tensors: list[torch.Tensor]) -> None:
        """Overwrite every process's copy of `tensors` (a model's parameters, buffers, optimiser state) with the
        main process's. Processes that train the same surrogate stay identical only where training is
        bit-reproducible (CPU at equal threads); on GPUs atomics make them drift, and drifted surrogates would
        give each process's rows another objective."""
        if self.size == 1:
            return
        import torch.distributed as dist

        with torch.no_grad():
            for t in tensors:
                buffer = t.detach().to(self.device) if self.device is not None else t.detach()
                dist.broadcast(buffer, src=0)
                t.copy_(buffer.to(t.device))

    def agree(self, what: str, value: int) -> None:
        """Raise on every process unless all hold the same `value` (e.g. the pass a checkpoint resumes at)."""
        if self.size == 1:
            return
        t = torch.tensor([value, -value], dtype=torch.float64)
        high, neg_low = (int(v) for v in self._reduce(t, "max").tolist())
        if high != -neg_low:
            raise ProtectionError(
                f"the {self.size} processes disagree on {what} ({-neg_low} to {high}): each one read its own "
                "checkpoint_dir; give every process the same (shared) folder, or a fresh one.")

    def close(self) -> None:
        """Wait for every process, then take the process group down: a gloo process that exits while a peer
        still holds the connection can abort at interpreter exit (seen here as a SIGABRT on CPU)."""
        if self.size == 1:
            return
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def rows_of(batches: list[np.ndarray], which: list[int]) -> np.ndarray:
    """The rows of the batches numbered `which` (what a process changed, for `share_rows`)."""
    return np.concatenate([batches[b] for b in which]) if which else np.zeros(0, dtype=np.int64)


def launched_processes() -> int:
    """How many processes the launcher started (WORLD_SIZE, set by accelerate launch and torchrun); 1 if none."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def process_group() -> ProcessGroup:
    """The processes this craft runs in: one, unless launched with WORLD_SIZE > 1, where accelerate's PartialState
    sets up torch.distributed (NCCL on CUDA, gloo on CPU) and gives each process its device."""
    launched = launched_processes()
    if launched <= 1:
        return ProcessGroup()
    cuda = torch.cuda.is_available()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", launched))
    if cuda and local > torch.cuda.device_count():
        raise ProtectionError(
            f"{local} processes on this machine but {torch.cuda.device_count()} GPU(s): start one process per GPU "
            "(accelerate launch --num_processes N), or hide the GPUs (CUDA_VISIBLE_DEVICES=) to split on CPUs.")
    from accelerate import PartialState

    state = PartialState(cpu=not cuda)
    if state.num_processes != launched:
        raise ProtectionError(
            f"WORLD_SIZE={launched} but accelerate set up {state.num_processes} process(es) (LOCAL_RANK="
            f"{os.environ.get('LOCAL_RANK')!r}); start the craft with accelerate launch or torchrun, which set "
            "both.")
    return ProcessGroup(state.process_index, state.num_processes, state.device)
