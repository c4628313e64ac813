"""Smoke test of benchmarks/gpu_check.py: its --dry-run runs every stage on the CPU and writes gpu-check.json and
gpu-check.md with the fields the GPU run reports; a stage run alone reads the limits of an earlier run; a failed
stage is recorded and the finished ones are kept."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import gpu_check  # noqa: E402

TINY = ["--dry-run", "--rows", "100", "--test-rows", "100"]   # smaller than the dry run's 200 rows: a fast test


def _positive(v) -> bool:
    return isinstance(v, float) and math.isfinite(v) and v > 0


def test_dry_run_writes_every_stage_then_a_stage_alone_reuses_the_limits(tmp_path):
    assert gpu_check.main([*TINY, "--out", str(tmp_path)]) == 0
    r = json.loads((tmp_path / "gpu-check.json").read_text())
    assert r["dry_run"] and r["errors"] == {} and list(r["stages"]) == ["limits", "victim", "bayes", "em"]
    assert r["device"].startswith("cpu") and r["environment"]["torch"]
    limits = r["stages"]["limits"]
    assert (tmp_path / "speed" / "speed.json").exists() and (tmp_path / "speed" / "speed.md").exists()
    assert "resnet18-w16 train_limit fp32" in limits["limits_images_per_s"] and limits["crafts"] == []
    v = r["stages"]["victim"]
    assert v["arch"] == "resnet18-w16" and v["rows"] == 100 and v["test_rows"] == 100 and v["epochs"] == 1
    assert _positive(v["images_per_s"]) and _positive(v["fraction_of_limit"]) and 0 <= v["test_accuracy"] <= 1
    assert v["train_seconds"] > 0 and v["wall_seconds"] >= v["train_seconds"] and v["images_resident_on_device"]
    assert v["victim"]["train"]["label_smoothing"] == 0.0          # VictimConfig.auto's CUDA recipe
    for name, method in (("bayes", "bayes"), ("em", "em")):
        c = r["stages"][name]
        assert c["method"] == method and c["rows"] == 100 and c["rounds_or_passes"] == 1
        assert _positive(c["images_per_s"]) and _positive(c["rows_per_s"]) and _positive(c["fraction_of_limit"])
        assert c["seconds"] > 0 and c["peak_device_memory_mib"] is None and c["peak_rss_mib"] > 0
        assert c["device"] == r["device"]
    assert r["stages"]["em"]["options"]["mode"] == "samplewise" and r["stages"]["em"]["options"]["steps"] == 2
    md = (tmp_path / "gpu-check.md").read_text()
    assert md.startswith(f"# GPU check on {r['device']}") and "dry-run" in md
    assert all(f"| {s} |" in md for s in ("limits", "victim", "bayes", "em"))

    # one stage alone: the fraction comes from the speed.json already there; the file now holds that stage only
    assert gpu_check.main([*TINY, "--out", str(tmp_path), "--stages", "em"]) == 0
    r = json.loads((tmp_path / "gpu-check.json").read_text())
    assert list(r["stages"]) == ["em"] and _positive(r["stages"]["em"]["fraction_of_limit"])


def test_a_failed_stage_is_recorded_and_the_others_are_kept(tmp_path, monkeypatch):
    import hf_unlearnable

    real = hf_unlearnable.craft

    def em_breaks(ds, method, **kwargs):
        if method == "em":
            raise RuntimeError("planted failure")
        return real(ds, method, **kwargs)

    monkeypatch.setattr(hf_unlearnable, "craft", em_breaks)
    assert gpu_check.main([*TINY, "--out", str(tmp_path), "--stages", "bayes", "em"]) == 1
    r = json.loads((tmp_path / "gpu-check.json").read_text())
    assert list(r["stages"]) == ["bayes"] and list(r["errors"]) == ["em"]
    assert "planted failure" in r["errors"]["em"]["error"]
    assert r["stages"]["bayes"]["fraction_of_limit"] is None       # no limits measured in this folder
    assert "| em | failed |" in (tmp_path / "gpu-check.md").read_text()
