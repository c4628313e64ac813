"""Smoke test of benchmarks/speed.py at --quick sizes: every limit measured, the trainer and every craft compared with
its limit, and the three outputs written."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import speed  # noqa: E402


def test_quick_run_writes_a_fraction_of_limit_for_the_trainer_and_every_craft(tmp_path):
    assert speed.main(["--quick", "--out-dir", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "speed.json").read_text())
    entries = result["entries"]
    limits = [e for e in entries if e["kind"] == "limit"]
    assert {e["limit"] for e in limits} >= {"train_limit", "input_grad_limit"}
    assert {e["arch"] for e in limits} == {"convnet-w16", "resnet18-w64", "resnet18-w16"}
    assert all(e["images_per_s"] > 0 for e in limits)
    assert result["environment"]["threads"] >= 1
    assert result["bf16"] in ("native", "not native here")
    for kind, method in (("trainer", None), ("craft", "em"), ("craft", "bayes"), ("craft", "pue"), ("craft", "tap"),
                         ("craft", "rem")):
        found = [e for e in entries if e["kind"] == kind and e.get("method") == method]
        assert found, (kind, method)
        for e in found:
            fraction = e["fraction_of_limit"]
            assert isinstance(fraction, float) and math.isfinite(fraction) and fraction > 0, e["name"]
            assert result["fraction_of_limit"][e["name"]] == fraction
            assert e["images_per_s"] > 0 and e["limit_images_per_s"] > 0 and e["fraction_of_same_batch_limit"] > 0
    assert {e["name"] for e in entries if e.get("method") == "em"} == {"em samplewise", "em classwise"}
    md = (tmp_path / "speed.md").read_text()
    assert "| trainer |" in md and all(f"**{name}**" in md for name in ("trainer", "em samplewise", "bayes", "pue"))
    assert (tmp_path / "speed.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
