"""hub_scripts/publish_noise.py and publish_surrogate.py, end to end against the loopback Hub on tiny data:
craft/train -> push with a card -> load back with the library, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FAST_OPTIONS

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hub_scripts"))

import publish_noise  # noqa: E402
import publish_surrogate  # noqa: E402


def fast_options(method: str) -> list[str]:
    opts = {k: v for k, v in FAST_OPTIONS[method].items()}
    return [a for k, v in opts.items() for a in ("--option", f"{k}={str(v).lower() if isinstance(v, bool) else v}")]


def test_publish_em_noise_bank_as_a_program(hub, tmp_path):
    """Run as a user would: a fresh process, --endpoint and --token on the command line, a fresh HF_HOME."""
    from hf_unlearnable import load_noise, protect
    from hf_unlearnable.data import load_cifar10

    repo_id = hub.repo_id("em-cifar10")
    token = hub.tokens["alice"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(tmp_path / "home"), HF_HUB_DISABLE_XET="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "hub_scripts" / "publish_noise.py"), "--method", "em",
                           "--rows", "60", *fast_options("em"), "--repo-id", repo_id, "--endpoint", hub.url,
                           "--token", token, "--license", "mit"],
                          env=env, capture_output=True, text=True, timeout=300, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"-> {hub.url}/{repo_id}/commit/" in proc.stdout
    assert token not in proc.stdout + proc.stderr
    noise = load_noise(repo_id)
    assert noise.method == "em" and noise.kind == "classwise" and len(noise) == 10
    assert noise.config.source["dataset_id"] == "uoft-cs/cifar10" and "60 train rows" in noise.config.source["data"]
    card = Path(hub.api().hf_hub_download(repo_id, "README.md")).read_text()
    assert "- uoft-cs/cifar10" in card and "license: mit" in card and "em classwise noise" in card
    rows = load_cifar10("train").select(range(8))
    out = rows.map(protect(noise=noise), batched=True)
    assert out.num_rows == 8


def test_publish_pue_noise_bank(hub, capsys):
    from hf_unlearnable import load_noise

    repo_id = hub.repo_id("pue-cifar10")
    assert publish_noise.main(["--method", "pue", "--rows", "40", *fast_options("pue"), "--repo-id", repo_id,
                               "--branch", "v0"]) == 0
    assert "published" in capsys.readouterr().out
    noise = load_noise(repo_id, revision="v0")
    assert noise.method == "pue" and noise.kind == "classwise"
    assert hub.api().list_repo_files(repo_id) == [".gitattributes"]   # main untouched: it went to the branch


def test_publish_trained_surrogate(hub):
    import json

    from hf_unlearnable import Surrogate

    repo_id = hub.repo_id("surrogate-cifar10")
    assert publish_surrogate.main(["--rows", "100", "--test-rows", "50", "--epochs", "1", "--width", "8",
                                   "--repo-id", repo_id]) == 0
    sur = Surrogate.from_pretrained(repo_id)
    t = sur.config.training
    assert sur.config.width == 8 and t["train_rows"] == 100 and t["test_rows"] == 50 and t["epochs"] == 1
    card = Path(hub.api().hf_hub_download(repo_id, "README.md")).read_text()
    assert f"{100 * t['test_accuracy']:.2f} %" in card and "- uoft-cs/cifar10" in card
    assert json.loads(Path(hub.api().hf_hub_download(repo_id, "config.json")).read_text())["arch"] == "convnet"


def test_publish_bundled_default_surrogate(hub):
    import torch

    from hf_unlearnable.surrogates import DEFAULT_DIR, WEIGHTS_NAME, Surrogate, load_surrogate

    if not (DEFAULT_DIR / WEIGHTS_NAME).exists():
        pytest.skip("the bundled default surrogate is not built")
    repo_id = hub.repo_id("default-surrogate")
    assert publish_surrogate.main(["--from-dir", "default", "--repo-id", repo_id]) == 0
    ours, theirs = load_surrogate("default").model.state_dict(), Surrogate.from_pretrained(repo_id).model.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    card = Path(hub.api().hf_hub_download(repo_id, "README.md")).read_text()
    acc = Surrogate.from_pretrained(DEFAULT_DIR).config.training["test_accuracy"]
    assert f"{100 * acc:.2f} %" in card


def test_endpoint_must_be_set_before_import(hub):
    with pytest.raises(SystemExit, match="already imported with endpoint"):
        publish_surrogate.main(["--from-dir", "default", "--repo-id", "alice/x", "--endpoint", "http://127.0.0.1:9"])
