"""One error path for the command line: whatever fails (the OS, the network, the Hub, Ctrl-C in a worker pool) ends
as one `error: ...` line and exit 2 (130 for Ctrl-C), no traceback unless -v, nothing left behind, and paths are
checked before any work."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import PIL.Image
import pytest

datasets = pytest.importorskip("datasets")

from hf_unlearnable.cli import main  # noqa: E402
from tests.test_cli import _leftovers, tiny  # noqa: E402,F401  (the fixture)

REPO = Path(__file__).resolve().parents[1]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


def test_disk_full_while_saving_is_one_error_line(tiny, tmp_path, capsys, monkeypatch):
    src, _ = tiny

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "data-00000-of-00001.arrow")

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", full)
    assert main(["protect", "--data", str(src), "--method", "random", "--output", str(tmp_path / "out"), "-q"]) == 2
    assert "disk is full" in _one_error_line(capsys)
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []


def test_unexpected_failure_is_one_line_and_a_traceback_only_with_verbose(tiny, tmp_path, capsys, monkeypatch):
    src, _ = tiny

    def broken(self, *args, **kwargs):
        raise RuntimeError("something inside a dependency")

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", broken)
    args = ["protect", "--data", str(src), "--method", "random", "--output", str(tmp_path / "out")]
    assert main([*args, "-q"]) == 2
    line = _one_error_line(capsys)
    assert "RuntimeError: something inside a dependency" in line and "-v" in line
    assert main([*args, "-v"]) == 2
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize("checkpoint, match", [("", "is empty"), ("/proc/self/no-such/ckpt", "cannot write"),
                                               ("FILE/ckpt", "is a file")])
def test_checkpoint_dir_is_checked_before_any_work(tiny, tmp_path, capsys, checkpoint, match):
    src, _ = tiny
    (tmp_path / "FILE").write_text("x")
    checkpoint = checkpoint.replace("FILE", str(tmp_path / "FILE"))
    t0 = time.perf_counter()
    assert main(["craft", "--data", str(src), "--method", "em", "--option", "max_iters=50", "--option",
                 "min_iters=50", "--checkpoint-dir", checkpoint, "--output", str(tmp_path / "n"), "-q"]) == 2
    assert match in _one_error_line(capsys)
    assert time.perf_counter() - t0 < 20      # refused up front, not after a round of crafting
    assert not (tmp_path / "n").exists()


@pytest.mark.parametrize("option, match", [("seed", "2**63"), ("surrogate_width=0", "surrogate_width"),
                                           ("surrogate_width=-3", "surrogate_width"),
                                           ("surrogate_width=1000000000", "surrogate_width"),
                                           ("lr=Infinity", "finite")])
def test_out_of_range_options_are_refused(tiny, tmp_path, capsys, option, match):
    src, _ = tiny
    args = ["--seed", str(2 ** 64)] if option == "seed" else ["--option", option]
    assert main(["craft", "--data", str(src), "--method", "em", *args, "--output", str(tmp_path / "n"), "-q"]) == 2
    assert match in _one_error_line(capsys)


def test_bayes_tiny_sigma_is_refused(tiny, tmp_path, capsys):
    src, _ = tiny
    assert main(["protect", "--data", str(src), "--method", "bayes", "--option", "sigma=1e-300", "--output",
                 str(tmp_path / "o"), "-q"]) == 2
    assert "sigma" in _one_error_line(capsys)


def test_batch_coupled_method_refuses_several_processes(tiny, tmp_path, capsys):
    src, _ = tiny
    assert main(["protect", "--data", str(src), "--method", "bayes", "--num-proc", "2", "--output",
                 str(tmp_path / "o"), "-q"]) == 2
    assert "--num-proc" in _one_error_line(capsys)
    assert main(["protect", "--data", str(src), "--method", "random", "--num-proc", "2", "--output",
                 str(tmp_path / "o"), "-q"]) == 0


def test_wrong_token_is_one_error_line(tiny, hub, tmp_path, capsys):
    src, _ = tiny
    assert main(["train-surrogate", "--data", str(src), "--epochs", "1", "--width", "8", "--push",
                 hub.repo_id("s"), "--token", "hf_not_a_token", "-q"]) == 2
    line = _one_error_line(capsys)
    assert "401" in line and "hf_not_a_token" not in line


def _cli(args, env=None, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "hf_unlearnable", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}, **kwargs)


def test_unreachable_hub_is_one_error_line(tiny, tmp_path):
    src, _ = tiny
    proc = _cli(["train-surrogate", "--data", str(src), "--epochs", "1", "--width", "8", "--push", "alice/x", "-q"],
                env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_ETAG_TIMEOUT": "2"})
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 2, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("error: cannot reach the Hub")


def test_ctrl_c_in_a_worker_pool_is_interrupted_and_leaves_nothing(tmp_path):
    """Ctrl-C (SIGINT to the whole process group) while `protect --num-proc 2` maps: exit 130, 'interrupted', no
    worker traceback, no output and no hidden folder."""
    import numpy as np

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(600, 64, 64, 3), dtype=np.uint8)
    ds = datasets.Dataset.from_dict({"image": [PIL.Image.fromarray(a) for a in images], "label": [i % 10 for i in range(600)]})
    ds = ds.cast_column("image", datasets.Image())
    ds.save_to_disk(str(tmp_path / "src"))
    out = tmp_path / "out"
    proc = _cli(["protect", "--data", str(tmp_path / "src"), "--method", "em", "--option", "steps=50",
                 "--num-proc", "2", "--batch-size", "20", "--output", str(out)], start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.name.startswith(".out.map-") for p in tmp_path.iterdir()):
        time.sleep(0.2)
    time.sleep(3)      # the pool is mapping now
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "interrupted"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
