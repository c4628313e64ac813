"""PUE crafting (methods/pue.py): what the registry-wide suites do not cover."""

from __future__ import annotations

import numpy as np

from hf_unlearnable import craft
from tests.conftest import FAST_OPTIONS, build_dataset


def test_interrupted_craft_resumes_to_the_bytes_of_a_straight_run(tmp_path):
    """The weight noise is drawn from a stream per round, so a run resumed from its checkpoint after round 1
    draws what a straight run draws in round 2 (the robust steps run from round 0: turn_on_robust=0)."""
    ds = build_dataset(n=40)
    opts = {**FAST_OPTIONS["pue"], "stop_error": 0.0}
    straight = craft(ds, "pue", **{**opts, "max_iters": 2, "min_iters": 2})
    ckpt = str(tmp_path / "ckpt")
    craft(ds, "pue", checkpoint_dir=ckpt, **{**opts, "max_iters": 1, "min_iters": 1})
    resumed = craft(ds, "pue", checkpoint_dir=ckpt, **{**opts, "max_iters": 2, "min_iters": 2})
    assert resumed.config.stats["rounds"] == 2
    np.testing.assert_array_equal(resumed.steps, straight.steps)
