"""Faults the command line meets in the field, made for real: `kill -9` at random moments of a craft (then resume to
the same bytes), a full disk (a small tmpfs, where this user may mount one). Two writers and a reader racing on one
folder: tests/test_atomic.py. With HF_UNLEARNABLE_FAULT_REPORT=path the counts are written there as JSON."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

datasets = pytest.importorskip("datasets")

from tests.conftest import build_dataset, tiny_images  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
KILLS = int(os.environ.get("HF_UNLEARNABLE_FAULT_KILLS", "4"))
COUNTS: Counter = Counter()


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    path = os.environ.get("HF_UNLEARNABLE_FAULT_REPORT")
    if path:
        Path(path).write_text(json.dumps(dict(COUNTS), indent=1, sort_keys=True))


def _cli(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hf_unlearnable", *args, "-q"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _hidden(*folders: Path) -> list[str]:
    return sorted(str(p) for f in folders if f.exists() for p in f.rglob(".*"))


@pytest.mark.parametrize("method, options", [
    ("em", ["--mode", "samplewise", "--option", "min_iters=6", "--option", "max_iters=6", "--option", "steps=4",
            "--option", "surrogate_width=8", "--option", "batch_size=32"]),
    ("bayes", ["--option", "passes=6", "--option", "subset_size=16", "--option", "surrogate_width=8",
               "--option", "refresh_every=2", "--option", "surrogate_epochs=1"]),
])
def test_kill_9_during_craft_then_resume_gives_the_same_bytes(tmp_path, method, options):
    from hf_unlearnable import load_noise

    build_dataset(tiny_images(48)).save_to_disk(str(tmp_path / "data"))
    args = ["craft", "--data", str(tmp_path / "data"), "--method", method, *options]

    reference = _cli([*args, "--output", str(tmp_path / "reference")])
    t0 = time.time()
    assert reference.wait(timeout=600) == 0, reference.stderr.read()
    span = time.time() - t0
    rng = random.Random(f"{method}-kills")
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    for _ in range(KILLS):
        proc = _cli([*args, "--checkpoint-dir", str(ckpt), "--output", str(out)])
        time.sleep(rng.uniform(0.3, span))      # anywhere: imports, reading, a round, a checkpoint write
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            COUNTS["kills"] += 1
        proc.wait(timeout=60)
        if out.exists():                          # finished before the kill: start the next one afresh
            shutil.rmtree(out)
    final = _cli([*args, "--checkpoint-dir", str(ckpt), "--output", str(out)])
    assert final.wait(timeout=600) == 0, final.stderr.read()
    COUNTS["resumes"] += 1
    same = np.array_equal(load_noise(out).steps, load_noise(tmp_path / "reference").steps)
    COUNTS["identical"] += same
    leftovers = _hidden(ckpt, tmp_path)
    COUNTS["leftovers"] += len(leftovers)
    assert same and leftovers == []


@pytest.fixture
def full_disk(tmp_path):
    """A 1 MiB tmpfs: a real ENOSPC. Skipped (saying why) where this user cannot mount one."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_is_one_error_line_and_leaves_nothing(tmp_path, full_disk):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(40)]   # ~2 MB of PNG
    build_dataset(images).save_to_disk(str(tmp_path / "data"))
    # protect: the ~2 MB dataset overflows the 1 MiB disk; craft: its noise (a few 100 kB) meets a disk that a
    # filler file leaves 32 kB of (safetensors reports ENOSPC as its own error type)
    for command, filler in ((["protect", "--method", "random"], 0), (["craft", "--method", "random"], 992 * 1024)):
        if filler:
            (full_disk / "filler").write_bytes(b"x" * filler)
        out = full_disk / command[0]
        proc = _cli([command[0], "--data", str(tmp_path / "data"), *command[1:], "--output", str(out)])
        _, err = proc.communicate(timeout=300)
        COUNTS["full-disk runs"] += 1
        assert proc.returncode == 2, err
        assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("error: the disk is full")
        assert [p.name for p in full_disk.iterdir()] == (["filler"] if filler else [])
        COUNTS["full-disk clean errors"] += 1
