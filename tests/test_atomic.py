"""Whole-folder writes beside other writers and after killed ones (`_atomic`): readers never miss the folder, racing
writers never raise, and hidden temporary folders of dead writers are cleaned up by the next run."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hf_unlearnable import _atomic
from hf_unlearnable._atomic import atomic_dir, remove_stale, scratch_dir

SWAPS = int(os.environ.get("HF_UNLEARNABLE_FAULT_SWAPS", "150"))
COUNTS: dict = {}


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    path = os.environ.get("HF_UNLEARNABLE_FAULT_REPORT")
    if path:
        import json

        Path(f"{path}.atomic.json").write_text(json.dumps(COUNTS, indent=1, sort_keys=True))


def _writer(target: str, tag: str, swaps: int, errors) -> None:
    try:
        for i in range(swaps):
            with atomic_dir(target) as tmp:
                (tmp / "a.txt").write_text(f"{tag}{i}")
                (tmp / "b.txt").write_text(f"{tag}{i}")
    except BaseException as exc:  # report any raw error to the parent
        errors.put(f"{type(exc).__name__}: {exc}")


def _read_at(dir_fd: int, name: str) -> str:
    fd = os.open(name, os.O_RDONLY, dir_fd=dir_fd)
    with os.fdopen(fd) as f:
        return f.read()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.skipif(_atomic._RENAMEAT2 is None, reason="no renameat2 here: the two-rename fallback has a gap")
def test_two_writers_and_a_reader(tmp_path):
    """Two processes replace one folder 2 x 150 times while this one reads it: no raw error, never a missing or
    half-written folder, and nothing hidden left beside it."""
    target = tmp_path / "out"
    ctx = multiprocessing.get_context("fork")
    errors = ctx.Queue()
    writers = [ctx.Process(target=_writer, args=(str(target), tag, SWAPS, errors)) for tag in "xy"]
    for w in writers:
        w.start()
    reads = missing = torn = 0
    while any(w.is_alive() for w in writers):
        try:   # both files through one handle on the folder: the same version of it
            fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            missing += reads > 0     # before the first write lands the folder is not there yet
            continue
        try:
            a, b = (_read_at(fd, name) for name in ("a.txt", "b.txt"))
        except FileNotFoundError:    # that version was replaced and deleted while being read: read again
            continue
        finally:
            os.close(fd)
        reads += 1
        torn += a != b
    for w in writers:
        w.join()
    raised = [errors.get() for _ in range(errors.qsize())] if not errors.empty() else []
    COUNTS.update({"writers": 2, "swaps per writer": SWAPS, "reads": reads, "missing reads": missing,
                   "mixed reads": torn, "raw errors": len(raised),
                   "leftovers": len([n for n in os.listdir(tmp_path) if n != "out"])})
    assert raised == [] and [w.exitcode for w in writers] == [0, 0]
    assert reads > 0 and missing == 0 and torn == 0
    assert sorted(os.listdir(tmp_path)) == ["out"]
    assert (target / "a.txt").read_text() in {f"x{SWAPS - 1}", f"y{SWAPS - 1}"}


def test_fallback_writers_race_without_raw_errors(tmp_path, monkeypatch):
    """Without an exchange (other systems) two writers still never raise, and leave nothing hidden."""
    monkeypatch.setattr(_atomic, "_exchange", lambda a, b: False)
    target = tmp_path / "out"
    ctx = multiprocessing.get_context("fork")
    errors = ctx.Queue()
    writers = [ctx.Process(target=_writer, args=(str(target), tag, SWAPS, errors)) for tag in "xy"]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    assert errors.empty() and [w.exitcode for w in writers] == [0, 0]
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_next_write_removes_folders_of_killed_writers(tmp_path):
    dead, alive = _dead_pid(), os.getppid()
    target = tmp_path / "out"
    for name in (f".out.tmp-{dead}-abc", f".out.old-{dead}-def", f".out.map-{dead}-ghi", f".out.tmp-{alive}-jkl",
                 ".out.tmp-legacy", ".other.tmp-1-x"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_text("x")
    with atomic_dir(target) as tmp:
        (tmp / "f").write_text("new")
    # a live writer's folder, a name without a pid and another target's folders are left alone
    assert sorted(os.listdir(tmp_path)) == sorted([f".out.tmp-{alive}-jkl", ".out.tmp-legacy", ".other.tmp-1-x", "out"])


def test_scratch_folders_carry_the_pid(tmp_path):
    folder = scratch_dir(tmp_path, ".x.tmp-")
    assert folder.name.startswith(f".x.tmp-{os.getpid()}-")
    remove_stale(tmp_path, ".x.tmp-")        # our own: kept
    assert folder.exists()


def test_checkpoint_removes_state_of_killed_writers(tmp_path):
    import torch

    from hf_unlearnable.methods._checkpoint import _Checkpoint

    stale = tmp_path / f".state-{_dead_pid()}-zzz"
    stale.mkdir()
    (stale / "state.safetensors").write_bytes(b"half")
    _Checkpoint(tmp_path, {"a": 1}, "fp").save({"iteration": 1}, {"t": torch.zeros(2)})
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["state.json", "state.safetensors"]
