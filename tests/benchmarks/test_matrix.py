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


def test_victim_columns_train_their_own_victim(tmp_path, monkeypatch):
    """adversarial-4 is defence none with a victim that trains adversarially at 4/255 (the protocol's otherwise)."""
    import hf_unlearnable
    from hf_unlearnable.evaluate import VictimConfig

    base = VictimConfig.auto(3)
    variant = matrix.victim_for(base, "adversarial-4")
    assert variant.train.adversarial_epsilon == 4 / 255 and variant.train.adversarial_steps == 1
    assert base.train.adversarial_epsilon == 0 and matrix.victim_for(base, "cutout") is base
    assert variant.train.epochs == 3 and variant.arch == base.arch

    calls = []
    real = hf_unlearnable.evaluate

    def recording(*args, **kwargs):
        calls.append((kwargs["defences"], kwargs["victim"].train.adversarial_epsilon))
        return real(*args, **kwargs)

    monkeypatch.setattr(hf_unlearnable, "evaluate", recording)
    assert matrix.main(["--data", "bundled", "--per-class", "4", "--test", "30", "--epochs", "1", "--methods",
                        "random", "--defences", "adversarial-4", "--threats", "--work", str(tmp_path / "work"),
                        "--out", str(tmp_path)]) == 0
    assert calls == [(["none"], 4 / 255)]
    result = json.loads((tmp_path / "matrix.json").read_text())
    assert result["columns"] == ["adversarial-4"] and set(result["clean"]) == {"adversarial-4"}
    assert "adversarial-4" in result["victim_columns"]
