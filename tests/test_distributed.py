"""Crafting across processes: bayes and sample-wise em split their work over the processes of `torchrun` /
`accelerate launch` and get the bytes of one process; crafts that cannot split refuse clearly instead of each
process redoing the work."""

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
    values = torch.arange(6.0)
    group.share_rows(values, np.array([0]), np.array([0, 1]))     # a no-op for one process
    assert values.tolist() == list(range(6)) and group.largest(torch.tensor(2.5)) == 2.5


def test_each_process_takes_a_round_robin_share_and_together_all():
    items = list(range(7))
    shares = [ProcessGroup(rank, 3).mine(items) for rank in range(3)]
    assert shares == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(i for s in shares for i in s) == items


@pytest.mark.parametrize("method, options", [("em", {"mode": "classwise"}), ("pue", {}), ("random", {})])
def test_a_craft_that_cannot_split_refuses_to_run_as_one_of_several_processes(monkeypatch, method, options):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ProtectionError, match=r"runs in one process.*started as 1 of 2"):
        craft(build_dataset(n=8), method, **{**FAST_OPTIONS.get(method, {}), **options})


SPLITS = {
    # 40 rows in minibatches of 8: 5 per pass, 3 + 2 per process
    "bayes": (dict(passes=2, subset_size=8), "ascends {share} of the 5 minibatches"),
    # 40 rows in noise batches of 8, two rounds (the second starts from the rows summed back)
    "em": (dict(FAST_OPTIONS["em"], mode="samplewise", batch_size=8, max_iters=2, min_iters=2),
           "updates {share} of the 5 noise batches"),
}


@pytest.mark.parametrize("method", sorted(SPLITS))
def test_a_craft_across_two_processes_gives_the_bytes_of_one(tmp_path, tiny_surrogate_dir, method):
    """`torchrun --nproc_per_node 2 -m hf_unlearnable craft` (gloo on CPU, what `accelerate launch` runs per GPU):
    the work is split, one noise folder is written once, and it equals the in-process craft with the workers' one
    thread; the per-round statistics match too."""
    options, share_line = SPLITS[method]
    if method == "bayes":
        options = dict(options, surrogate=tiny_surrogate_dir)
    data = tmp_path / "data"
    build_dataset(n=40).save_to_disk(str(data))
    out = tmp_path / "noise"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "hf_unlearnable", "craft", "--data", str(data), "--method", method, "--output", str(out)]
    for key, value in options.items():
        cmd += ["--option", f"{key}={value}"]
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    run = subprocess.run(cmd, env={**env, "HF_DATASETS_OFFLINE": "1"}, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "noise"]   # no temporary folder left behind
    for rank, share in ((0, 3), (1, 2)):                                     # the work was split, not repeated
        assert f"process {rank} of 2 {share_line.format(share=share)}" in run.stderr

    split = load_noise(str(out))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)    # as each torchrun worker: CPU kernels may round differently with another count
    try:
        single = craft(build_dataset(n=40), method, **options)
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(split.steps, single.steps) and np.abs(split.steps.astype(int)).max() <= 8
    assert np.abs(single.steps).sum() > 0
    assert split.config.stats["history"] == single.config.stats["history"]
