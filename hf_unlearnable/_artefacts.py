"""Saving and opening artefact folders (config.json + one safetensors file), shared by Noise and Surrogate.

Saving is atomic: everything is written into a temporary sibling folder that replaces the target only when
complete. Opening reads JSON and safetensors only and refuses folders that hold nothing but pickles.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import ProtectionError

CONFIG_NAME = "config.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


@contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces `target` whole, on failure it is removed.

    A reader sees the old folder or the complete new one, never a half-written one; on failure, parent folders
    this call created are removed again (only if still empty).
    """
    target = Path(target)
    parent = target.parent
    created = [p for p in reversed([parent, *parent.parents]) if not p.exists()]
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; a saved artefact is for sharing
        if target.exists():  # swap whole folders
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=parent))
            os.replace(target, old / "x")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for p in reversed(created):  # deepest first
            try:
                p.rmdir()
            except OSError:
                pass
        raise


def open_artefact(path: str | os.PathLike, weights_name: str, what: str) -> tuple[Path, dict]:
    """Check a local artefact folder and return it with its parsed config.json; pickles are never loaded."""
    folder = Path(path)
    if not folder.is_dir():
        raise ProtectionError(f"{what} {str(path)!r} is not a directory with {CONFIG_NAME} and {weights_name}.")
    if not (folder / weights_name).exists():
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        hint = (f" It holds pickle files {pickles}, which are never loaded (they can run code); ask the "
                "publisher for a safetensors export.") if pickles else ""
        raise ProtectionError(f"{what} {str(path)!r} has no {weights_name}.{hint}")
    try:
        return folder, json.loads((folder / CONFIG_NAME).read_text())
    except FileNotFoundError:
        raise ProtectionError(f"{what} {str(path)!r} has no {CONFIG_NAME}.") from None
