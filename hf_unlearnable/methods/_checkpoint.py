"""Resumable crafting state shared by the methods: an atomic checkpoint file, the data a checkpoint belongs to, and
a digest of a surrogate's weights (a checkpoint is resumed only into the same run)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from ..errors import ProtectionError


class _Checkpoint:
    """Atomic, resumable crafting state in one file: state.safetensors, whose metadata holds the progress, the
    config and the data fingerprint, so a kill at any moment leaves the previous state or the next, never a mix.
    state.json beside it is a readable copy of that metadata (checkpoints written before it moved into the
    safetensors file are read from state.json)."""

    def __init__(self, directory: str | os.PathLike | None, config: dict, fingerprint: str):
        self.dir = Path(directory).expanduser() if directory is not None else None
        if self.dir is not None:
            from .._artefacts import file_in_the_way

            blocking = file_in_the_way(self.dir, include_self=True)
            if blocking is not None:
                raise ProtectionError(f"checkpoint_dir={str(directory)!r}: {str(blocking)!r} is a file, not a "
                                      "folder; choose another checkpoint directory.")
        self.meta = {"config": config, "data": fingerprint}

    def load(self) -> tuple[dict, dict] | None:
        if self.dir is None or not (self.dir / "state.safetensors").exists():
            return None
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(self.dir / "state.safetensors"), framework="pt") as f:
                stored = (f.metadata() or {}).get("state")
        except Exception as exc:     # safetensors' own error type for a damaged file
            raise ProtectionError(f"checkpoint_dir={str(self.dir)!r}: state.safetensors cannot be read "
                                  f"({type(exc).__name__}: {exc}); delete it (or use a fresh directory) to start "
                                  "over.") from None
        if stored is None and not (self.dir / "state.json").exists():
            raise ProtectionError(
                f"checkpoint_dir={str(self.dir)!r} holds a state.safetensors this library did not write (no "
                "state record); use a fresh directory (or delete it) to start over.")
        info = json.loads(stored if stored is not None else (self.dir / "state.json").read_text())
        if info.get("config") != self.meta["config"] or info.get("data") != self.meta["data"]:
            raise ProtectionError(
                f"checkpoint_dir={str(self.dir)!r} holds a run with other options or other data; "
                "use a fresh directory (or delete it) to start over.")
        return info, load_file(str(self.dir / "state.safetensors"))

    def save(self, progress: dict, tensors: dict[str, torch.Tensor]) -> None:
        if self.dir is None:
            return
        from safetensors.torch import save_file

        from .._atomic import remove_stale, scratch_dir

        self.dir.mkdir(parents=True, exist_ok=True)
        remove_stale(self.dir, ".state-")     # a killed earlier run's half-written state
        tmp = scratch_dir(self.dir, ".state-")
        state = json.dumps({**self.meta, **progress}, indent=1)
        try:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / "state.safetensors"),
                      metadata={"state": state})
            (tmp / "state.json").write_text(state)
            os.replace(tmp / "state.safetensors", self.dir / "state.safetensors")  # the one atomic step
            os.replace(tmp / "state.json", self.dir / "state.json")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _fingerprint(data) -> str:
    """The data a checkpoint belongs to: row ids, labels and pixels (the same ids over re-encoded or otherwise
    changed images must not resume into them)."""
    import hashlib

    h = hashlib.blake2b(digest_size=12)
    h.update("\n".join(data.ids).encode())
    h.update(np.ascontiguousarray(data.labels).tobytes())
    h.update(np.ascontiguousarray(data.images).tobytes())
    return h.hexdigest()


def _weights_digest(module: torch.nn.Module) -> str:
    """A digest of a module's parameters and buffers: a checkpoint made against other surrogate weights (another
    in-memory model, a changed folder, a moved Hub revision) is refused, not resumed."""
    import hashlib

    h = hashlib.blake2b(digest_size=12)
    # buffers computed from the weights and the data (an ensemble's feature scales: both already covered) differ in
    # their last digits between devices, and would refuse a resume on another device
    derived = set(getattr(module, "derived_buffers", ()))
    for name, t in sorted(module.state_dict().items()):
        if not isinstance(t, torch.Tensor) or name in derived:
            continue
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
