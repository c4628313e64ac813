"""Crafting across processes: bayes splits each pass over the processes of `torchrun` / `accelerate launch` and gets
the same bytes as one process; methods that cannot split refuse clearly instead of each process redoing the work."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from hf_unlearnable import ProtectionError, craft, load_noise
from hf_unlearnable._distributed import ProcessGroup, process_group

from .conftest import FAST_OPTIONS, build_dataset


def test_a_plain_process_is_a_group_of_one(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    group = process_group()
    assert (group.rank, group.size, group.is_main) == (0, 1, True)
    values = np.arange(6.0)
    group.share_rows(values, np.array([0]), np.array([0, 1]))     # a no-op for one process
    assert values.tolist() == list(np.arange(6.0))


def test_each_process_takes_a_round_robin_share_and_together_all():
    items = list(range(7))
    shares = [ProcessGroup(rank, 3).mine(items) for rank in range(3)]
    assert shares == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(i for s in shares for i in s) == items


@pytest.mark.parametrize("method", ["em", "pue", "random"])
def test_a_method_that_cannot_split_refuses_to_run_as_one_of_several_processes(monkeypatch, method):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ProtectionError, match=r"runs in one process.*WORLD_SIZE=2.*bayes"):
        craft(build_dataset(n=8), method, **FAST_OPTIONS.get(method, {}))


def test_bayes_across_two_processes_gives_the_bytes_of_one(tmp_path, tiny_surrogate_dir):
    """`torchrun --nproc_per_node 2 -m hf_unlearnable craft` (gloo on CPU, what `accelerate launch` runs per GPU):
    one noise folder, written once, equal to the in-process craft with the workers' one thread; the minibatch
    estimates match too."""
    data = tmp_path / "data"
    build_dataset(n=40).save_to_disk(str(data))
    options = dict(passes=2, subset_size=8, surrogate=tiny_surrogate_dir)   # 5 minibatches: 3 + 2 per process
    out = tmp_path / "noise"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "hf_unlearnable", "craft", "--data", str(data), "--method", "bayes", "--output", str(out)]
    for key, value in options.items():
        cmd += ["--option", f"{key}={value}"]
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    run = subprocess.run(cmd, env={**env, "HF_DATASETS_OFFLINE": "1"}, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "noise"]   # no temporary folder left behind
    for rank, share in ((0, 3), (1, 2)):                                     # the work was split, not repeated
        assert f"process {rank} of 2 ascends {share} of the 5 minibatches" in run.stderr

    split = load_noise(str(out))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)    # as each torchrun worker: CPU kernels may round differently with another count
    try:
        single = craft(build_dataset(n=40), "bayes", **options)
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(split.steps, single.steps) and np.abs(split.steps.astype(int)).max() <= 8
    assert np.abs(single.steps).sum() > 0
    assert [h["minibatch_estimate"] for h in split.config.stats["history"]] == pytest.approx(
        [h["minibatch_estimate"] for h in single.config.stats["history"]], rel=1e-9)
