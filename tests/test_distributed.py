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
    import torch.distributed as dist

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ProtectionError, match=r"runs in one process.*started as 1 of 2.*"
                                               r"split across processes: bayes, em \(sample-wise only\), rem\.$"):
        craft(build_dataset(n=8), method, **{**FAST_OPTIONS.get(method, {}), **options})
    assert not dist.is_initialized()


def _torchrun(args: list[str], processes: int = 2) -> subprocess.CompletedProcess:
    """Run `python -m ...args` as torchrun workers on CPUs, one thread each, as the in-process references use."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", HF_DATASETS_OFFLINE="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)] + args
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


GROUP_SCRIPT = """
import json, sys, torch
from hf_unlearnable._distributed import process_group
g = process_group()
rows = torch.full((5, 2), -1.0)
mine = [r for r in range(4) if r % g.size == g.rank]          # row 4 is nobody's: it keeps its own value
rows[mine] = torch.tensor([[10.0 * r + g.rank, r] for r in mine])
g.share_rows(rows, mine, list(range(4)))
model = torch.nn.Linear(2, 1)
torch.nn.init.constant_(model.weight, float(g.rank + 1))
g.same_as_main(list(model.parameters()))
try:
    g.agree("a number", g.rank)
    agreed = True
except ValueError as exc:
    agreed = str(exc)
result = {"rank": g.rank, "size": g.size, "rows": rows.tolist(), "weight": model.weight.tolist(), "agreed": agreed,
          "largest": float(g.largest(torch.tensor(3.0 - g.rank)))}
with open(f"{sys.argv[1]}/rank{g.rank}.json", "w") as f:   # one file each: the two stdouts share one pipe
    json.dump(result, f)
g.close()
"""


def test_the_group_operations_across_two_real_processes(tmp_path):
    """share_rows takes each row from the process that owns it (bit-exact), largest is a max (not a sum), the main
    process's weights win, and a disagreement raises on every process."""
    script = tmp_path / "group.py"
    script.write_text(GROUP_SCRIPT)
    _torchrun([str(script), str(tmp_path)])
    import json

    out = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["rank"] for r in out] == [0, 1] and all(r["size"] == 2 for r in out)
    for r in out:
        assert r["rows"] == [[0.0, 0.0], [11.0, 1.0], [20.0, 2.0], [31.0, 3.0], [-1.0, -1.0]]
        assert r["largest"] == 3.0 and r["weight"] == [[1.0, 1.0]]
        assert "disagree on a number (0 to 1)" in r["agreed"]


SPLITS = {
    # 40 rows in minibatches of 8: 5 per pass, 3 + 2 per process
    "bayes": (dict(passes=2, subset_size=8), dict(passes=1), "ascended {n} minibatches in 1 passes"),
    # 40 rows in noise batches of 8, two rounds (the second starts from the rows summed back)
    "em": (dict(FAST_OPTIONS["em"], mode="samplewise", batch_size=8, max_iters=2, min_iters=2),
           dict(max_iters=1, min_iters=1), "updated {n} noise batches in 1 rounds"),
    # em's loop with rem's steps: the adversarial surrogate steps draw alike everywhere, the noise per row id
    "rem": (dict(FAST_OPTIONS["rem"], batch_size=8, max_iters=2, min_iters=2),
            dict(max_iters=1, min_iters=1), "updated {n} noise batches in 1 rounds"),
}


@pytest.mark.parametrize("method", sorted(SPLITS))
def test_a_craft_across_two_processes_resumes_to_the_bytes_of_one(tmp_path, tiny_surrogate_dir, method):
    """`torchrun --nproc_per_node 2 -m hf_unlearnable craft` (gloo on CPU, what `accelerate launch` runs per GPU),
    stopped after one pass/round and resumed from its checkpoint: the work is split, the noise folder is written
    once, and it equals one in-process craft straight through at the workers' one thread, statistics included."""
    options, first_part, share_line = SPLITS[method]
    if method == "bayes":
        options = dict(options, surrogate=tiny_surrogate_dir)
    data = tmp_path / "data"
    build_dataset(n=40).save_to_disk(str(data))

    def cli(opts: dict, out: str) -> list[str]:
        args = ["-m", "hf_unlearnable", "craft", "--data", str(data), "--method", method, "--output",
                str(tmp_path / out), "--checkpoint-dir", str(tmp_path / "ckpt")]
        return args + [a for k, v in opts.items() for a in ("--option", f"{k}={v}")]

    _torchrun(cli({**options, **first_part}, "first"))
    run = _torchrun(cli(options, "noise"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "data", "first", "noise"]  # no temporary folder
    assert run.stdout.splitlines().count(str(tmp_path / "noise")) == 1                  # saved by one process
    for rank, share in ((0, 3), (1, 2)):           # the resumed part's work was split, not repeated
        assert f"process {rank} of 2 {share_line.format(n=share)}" in run.stderr

    split = load_noise(str(tmp_path / "noise"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = craft(build_dataset(n=40), method, **options)
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(split.steps, single.steps) and np.abs(split.steps.astype(int)).max() <= 8
    assert np.abs(single.steps).sum() > 0
    assert split.config.stats["history"] == single.config.stats["history"]
