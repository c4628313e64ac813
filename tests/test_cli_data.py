"""Data in and out on the command line: every --data form, every --format, and --push (the loopback Hub)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

datasets = pytest.importorskip("datasets")

from hf_unlearnable.cli import main  # noqa: E402
from tests.data.test_sources import make_photo_folder  # noqa: E402


def test_a_photo_folder_in_and_out_as_files(tmp_path, capsys):
    """Mixed-size JPEGs in class subfolders come back as PNGs with the same names, sizes and labels, each within
    epsilon of its source."""
    photos = make_photo_folder(tmp_path / "photos", per_class=4)
    out = tmp_path / "out"
    assert main(["protect", "--data", str(photos), "--method", "em", "--option", "steps=2", "--format", "imagefolder",
                 "--output", str(out), "-q"]) == 0
    sources = sorted(photos.rglob("*.*"))
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == sorted(
        f"{p.parent.name}/{p.stem}.png" for p in sources)
    for src in sources:
        a = np.asarray(PIL.Image.open(src).convert("RGB")).astype(int)
        b = np.asarray(PIL.Image.open(out / src.parent.name / f"{src.stem}.png")).astype(int)
        assert a.shape == b.shape and 0 < np.abs(a - b).max() <= 8
    back = datasets.load_dataset("imagefolder", data_dir=str(out), split="train")
    assert back.features["label"].names == ["cat", "dog"] and back.num_rows == 8


@pytest.mark.parametrize("form", ["folder", "imagefolder:", "parquet-folder", "parquet:", "arrow"])
def test_every_source_form(tmp_path, form):
    photos = make_photo_folder(tmp_path / "photos")
    from hf_unlearnable.data import load_source

    ds = load_source(str(photos))
    if form == "folder":
        spec = str(photos)
    elif form == "imagefolder:":
        spec = f"imagefolder:{photos}"
    elif form == "arrow":
        ds.save_to_disk(str(tmp_path / "arrow"))
        spec = str(tmp_path / "arrow")
    else:
        (tmp_path / "pq" / "data").mkdir(parents=True)
        ds.to_parquet(str(tmp_path / "pq" / "data" / "train-00000-of-00001.parquet"))
        spec = str(tmp_path / "pq") if form == "parquet-folder" else f"parquet:{tmp_path / 'pq' / 'data'}"
    out = tmp_path / "out"
    assert main(["protect", "--data", spec, "--method", "random", "--format", "parquet", "--output", str(out),
                 "-q"]) == 0
    back = datasets.load_dataset("parquet", data_files=str(out / "data" / "train-00000-of-00001.parquet"),
                                 split="train")
    assert back.num_rows == 6 and back["file_name"] == ds["file_name"]


def test_hub_ids_in_and_push_out(tmp_path, hub, capsys):
    photos = make_photo_folder(tmp_path / "photos")
    from hf_unlearnable.data import load_source

    source = hub.repo_id("photos")
    load_source(str(photos)).push_to_hub(source, token=hub.tokens["alice"])
    target = hub.repo_id("photos-protected")
    assert main(["protect", "--data", source, "--method", "random", "--push", target, "-q"]) == 0
    assert target in capsys.readouterr().out
    files = hub.api().list_repo_files(target, repo_type="dataset")
    assert "protection.json" in files and "README.md" in files
    record = json.loads(Path(hub.api().hf_hub_download(target, "protection.json", repo_type="dataset")).read_text())
    assert "random" in json.dumps(record)
    pushed = load_source(target, "train")
    assert pushed.num_rows == 6 and pushed["file_name"] == load_source(str(photos))["file_name"]


@pytest.mark.parametrize("argv, needle", [
    (["--config", "x"], "apply to Hub datasets"),
    (["--private"], "apply to --push"),
    (["--no-output"], "nowhere to put"),
])
def test_data_flag_errors(tmp_path, capsys, argv, needle):
    photos = make_photo_folder(tmp_path / "photos")
    out = [] if "--no-output" in argv else ["--output", str(tmp_path / "o")]
    argv = [a for a in argv if a != "--no-output"]
    assert main(["protect", "--data", str(photos), "--method", "random", *argv, *out, "-q"]) == 2
    assert needle in capsys.readouterr().err
