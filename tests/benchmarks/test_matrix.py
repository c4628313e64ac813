"""Smoke test of benchmarks/matrix.py on the bundled slice: cells for two methods, a training-time defence and both
threat models; the clean columns shared; a second run resumes from the cache and adds a method."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import matrix  # noqa: E402


def test_matrix_cells_shared_baselines_resume_and_outputs(tmp_path):
    common = ["--data", "bundled", "--per-class", "4", "--test", "30", "--epochs", "1", "--defences", "none",
              "cutout", "--work", str(tmp_path / "work"), "--out", str(tmp_path)]
    assert matrix.main([*common, "--methods", "random"]) == 0
    result = json.loads((tmp_path / "matrix.json").read_text())
    assert result["columns"] == ["none", "cutout", "scratch-mix", "finetune"]
    assert set(result["protected"]["random"]) == set(result["columns"])
    clean = result["clean"]
    assert set(clean) == {"none", "cutout", "scratch-mix", "finetune"}
    assert set(clean["finetune"]) == {"pre-trained", "fine-tuned on clean"}
    assert all(0 <= v <= 1 for v in result["protected"]["random"].values())
    # a second method reuses the clean columns and the first method's cached cells
    assert matrix.main([*common, "--methods", "ops", "--threats"]) == 0
    result = json.loads((tmp_path / "matrix.json").read_text())
    assert set(result["protected"]) == {"random", "ops"} and set(result["protected"]["ops"]) == {"none", "cutout"}
    assert result["clean"] == clean and set(result["best"]) == set(result["columns"])
    md = (tmp_path / "matrix.md").read_text()
    assert "| random |" in md and "| ops |" in md and "**" in md
    assert (tmp_path / "matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_merge_keeps_other_writers_cells(tmp_path):
    path = tmp_path / "clean.json"
    assert matrix._merge(path, {"none": 0.7}) == {"none": 0.7}
    path.write_text(json.dumps({"none": 0.7, "cutout": 0.6}))      # another run's cell, written in between
    assert matrix._merge(path, {"mixup": 0.5}) == {"none": 0.7, "cutout": 0.6, "mixup": 0.5}
    assert matrix._merge(path, {"none": 0.1, "jpeg": 0.4}, keep=True)["none"] == 0.7      # a clean cell stays
    assert matrix._merge(path, {"none": 0.2})["none"] == 0.2
    assert json.loads(path.read_text()) == {"none": 0.2, "cutout": 0.6, "mixup": 0.5, "jpeg": 0.4}
