"""The `hf-unlearnable` command line, run in-process through cli.main([...]). Self-contained and fast (seconds)."""

from __future__ import annotations

import argparse
import io
import json

import numpy as np
import PIL.Image
import pytest

datasets = pytest.importorskip("datasets")

from hf_unlearnable.cli import main, parse_class_map, parse_epsilon, parse_options  # noqa: E402

EPS_LEVELS = 8


def _png(arr: np.ndarray) -> dict:
    buf = io.BytesIO()
    PIL.Image.fromarray(arr).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def _pixels(cell) -> np.ndarray:
    if isinstance(cell, PIL.Image.Image):
        return np.asarray(cell.convert("RGB")).astype(np.int16)
    return np.asarray(PIL.Image.open(io.BytesIO(cell["bytes"])).convert("RGB")).astype(np.int16)


@pytest.fixture
def tiny(tmp_path):
    """16 rows of 32x32 RGB noise images (values touching 0 and 255), 2 classes, and an extra column; on disk."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(16, 32, 32, 3), dtype=np.uint8)
    images[0] = 0
    images[1] = 255
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"]),
                                  "note": datasets.Value("string")})
    ds = datasets.Dataset.from_dict({"img": [_png(a) for a in images], "label": [i % 2 for i in range(16)],
                                     "note": [f"row{i}" for i in range(16)]}, features=features)
    path = tmp_path / "tiny"
    ds.save_to_disk(str(path))
    return path, ds


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("command", [[], ["protect"], ["craft"], ["evaluate"], ["train-surrogate"], ["demo"]])
def test_help_exits_zero(command, capsys):
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: hf-unlearnable" in out
    if command:
        assert "Default" in out or "default" in out


def test_protect_writes_dataset_within_epsilon(tiny, tmp_path, capsys):
    src, original = tiny
    out = tmp_path / "out" / "protected"
    assert main(["protect", "--data", str(src), "--method", "random", "--epsilon", "8/255", "--seed", "3",
                 "--output", str(out), "-q"]) == 0
    prot = datasets.load_from_disk(str(out))
    assert prot.column_names == original.column_names
    assert len(prot) == len(original)
    assert prot["note"] == original["note"] and prot["label"] == original["label"]
    raw = prot.cast_column("img", datasets.Image(decode=False))
    worst, changed = 0, 0
    for a, b in zip(original["img"], raw["img"]):
        assert b["bytes"][:8] == b"\x89PNG\r\n\x1a\n"
        d = np.abs(_pixels(a) - _pixels(b))
        worst = max(worst, int(d.max()))
        changed += int(d.any())
    assert worst <= EPS_LEVELS
    assert changed == len(original)
    assert _leftovers(out.parent) == []
    assert str(out) in capsys.readouterr().out


def test_protect_output_does_not_depend_on_batching(tiny, tmp_path):
    src, _ = tiny
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["protect", "--data", str(src), "--method", "random", "--output", str(a), "-q"]) == 0
    assert main(["protect", "--data", str(src), "--method", "random", "--output", str(b), "--batch-size", "3",
                 "-q"]) == 0
    ra = datasets.load_from_disk(str(a)).cast_column("img", datasets.Image(decode=False))["img"]
    rb = datasets.load_from_disk(str(b)).cast_column("img", datasets.Image(decode=False))["img"]
    assert [x["bytes"] for x in ra] == [x["bytes"] for x in rb]


@pytest.mark.parametrize("eps", ["8", "255", "0", "-1/255", "0.5"])
def test_bad_epsilon_is_a_clean_error(eps, tiny, tmp_path, capsys):
    src, _ = tiny
    out = tmp_path / "out"
    assert main(["protect", "--data", str(src), "--method", "random", f"--epsilon={eps}", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "epsilon" in err
    assert "Traceback" not in err
    if eps == "8":
        assert "8/255" in err
    assert not out.exists()


def test_unparsable_epsilon_is_a_usage_error(tiny, tmp_path, capsys):
    src, _ = tiny
    assert main(["protect", "--data", str(src), "--epsilon", "eight", "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "8/255" in err and "Traceback" not in err


def test_existing_output_is_refused_without_overwrite(tiny, tmp_path, capsys):
    src, _ = tiny
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["protect", "--data", str(src), "--method", "random", "--output", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--overwrite" in err
    assert (out / "keep.txt").read_text() == "mine"
    assert main(["protect", "--data", str(src), "--method", "random", "--output", str(out), "--overwrite",
                 "-q"]) == 0
    assert not (out / "keep.txt").exists()
    assert len(datasets.load_from_disk(str(out))) == 16
    assert _leftovers(tmp_path) == []


def test_output_that_would_replace_the_input_is_refused_even_with_overwrite(tiny, tmp_path, capsys):
    src, ds = tiny
    for out in (src, src.parent):        # the input folder itself, or a folder holding it
        assert main(["protect", "--data", str(src), "--method", "random", "--output", str(out), "--overwrite",
                     "-q"]) == 2
        err = capsys.readouterr().err
        assert "would replace the input" in err and "Traceback" not in err
    assert datasets.load_from_disk(str(src))["note"] == ds["note"]     # the input is still there, unchanged


def test_unknown_method_leaves_no_output(tiny, tmp_path, capsys):
    src, _ = tiny
    out = tmp_path / "new" / "out"
    assert main(["protect", "--data", str(src), "--method", "nope", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nope" in err and "Traceback" not in err
    assert not out.exists() and not out.parent.exists()


def test_failure_inside_map_leaves_no_output(tiny, tmp_path, capsys):
    src, _ = tiny
    out = tmp_path / "new" / "out"
    # the label column is not an image column: the transform fails inside Dataset.map, after the temp dir exists
    assert main(["protect", "--data", str(src), "--method", "random", "--image-column", "label",
                 "--output", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "row 0" in err and "Traceback" not in err
    assert not out.exists() and not out.parent.exists()
    assert _leftovers(tmp_path) == []


def test_bad_inputs_are_clean_errors(tiny, tmp_path, capsys):
    src, _ = tiny
    afile = tmp_path / "a-file"
    afile.write_text("not a folder")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "train.parquet").write_bytes(b"PAR1 not really parquet")
    cases = [
        ["protect", "--data", str(tmp_path / "missing"), "--method", "random", "--output", str(tmp_path / "o")],
        ["protect", "--data", str(src), "--method", "random", "--option", "steps", "--output", str(tmp_path / "o")],
        ["protect", "--data", str(src), "--method", "random", "--option", "bogus=1", "--output", str(tmp_path / "o")],
        ["protect", "--data", str(src), "--noise", str(tmp_path), "--output", str(tmp_path / "o")],
        ["craft", "--data", str(src), "--method", "random", "--mode", "classwise", "--output", str(tmp_path / "o")],
        ["craft", "--data", str(src), "--method", "rem", "--mode", "classwise", "--output", str(tmp_path / "o")],
        ["evaluate", "--protected", str(src), "--test", str(src), "--mix", "0.5"],
        ["evaluate", "--protected", str(src), "--test", str(src), "--defences", "blur"],
        # paths that cannot be written: refused before any work (a report path that is a folder, a file in the way)
        ["evaluate", "--protected", str(src), "--test", str(src), "--json", str(tmp_path)],
        ["protect", "--data", str(src), "--method", "random", "--output", str(afile / "o")],
        ["craft", "-q", "--data", str(src), "--method", "em", "--mode", "classwise", "--checkpoint-dir", str(afile),
         "--output", str(tmp_path / "o")],
        ["protect", "--data", str(damaged), "--method", "random", "--output", str(tmp_path / "o")],
        ["protect", "--data", str(src), "--method", "em", "--option", "random_start=yes", "--output",
         str(tmp_path / "o")],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "o").exists()


def test_errors_that_name_a_python_argument_also_name_the_flag(tiny, tmp_path, capsys):
    _, ds = tiny
    src = tmp_path / "nolabel"
    ds.rename_column("label", "y").cast_column("y", datasets.Value("int64")).save_to_disk(str(src))
    capsys.readouterr()
    # (protect --method em no longer needs labels: without them it uses the surrogate's predicted classes)
    assert main(["train-surrogate", "--data", str(src), "--epochs", "1", "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "label_column=" in err and "(on the command line: --label-column)" in err


def test_parse_helpers():
    assert parse_epsilon("8/255") == pytest.approx(8 / 255)
    assert parse_epsilon("0.03") == pytest.approx(0.03)
    assert parse_options(["steps=10", "random_start=true", "mode=classwise", "step_size=0.8/255", "x=null",
                          "lr=0.05", "name=a=b"]) == {
        "steps": 10, "random_start": True, "mode": "classwise", "step_size": pytest.approx(0.8 / 255), "x": None,
        "lr": 0.05, "name": "a=b"}
    assert parse_options(["random_start=False", "surrogate=None"]) == {"random_start": False, "surrogate": None}
    with pytest.raises(argparse.ArgumentTypeError, match="divides by zero"):
        parse_epsilon("1/0")
    with pytest.raises(argparse.ArgumentTypeError, match="not a number"):
        parse_epsilon("eight")


def test_craft_then_protect_with_noise_then_evaluate(tiny, tmp_path, capsys):
    src, original = tiny
    noise_dir, out = tmp_path / "noise", tmp_path / "prot"
    fast = ["--option", "min_iters=1", "--option", "max_iters=1", "--option", "train_steps=1",
            "--option", "batch_size=16"]
    assert main(["craft", "--data", str(src), "--method", "em", "--mode", "classwise", *fast,
                 "--output", str(noise_dir), "-q"]) == 0
    err = capsys.readouterr().err                 # -q: warnings only, none of the package's progress bars
    assert "min-min" not in err and "\r" not in err and "stopped at max_iters=1" in err
    cfg = json.loads((noise_dir / "config.json").read_text())
    assert cfg["kind"] == "classwise" and cfg["epsilon_255"] == "8/255"
    assert (noise_dir / "noise.safetensors").exists()
    # the same output again is refused before any crafting
    assert main(["craft", "--data", str(src), "--output", str(noise_dir), "-q"]) == 2
    assert main(["protect", "--data", str(src), "--noise", str(noise_dir), "--output", str(out), "-q"]) == 0
    prot = datasets.load_from_disk(str(out))
    for a, b in zip(original["img"], prot.cast_column("img", datasets.Image(decode=False))["img"]):
        assert np.abs(_pixels(a) - _pixels(b)).max() <= EPS_LEVELS
    capsys.readouterr()
    report_json, report_md = tmp_path / "r" / "report.json", tmp_path / "r" / "report.md"
    assert main(["evaluate", "--protected", str(out), "--test", str(src), "--clean", str(src), "--mix", "1.0", "0.5",
                 "--epochs", "1", "--json", str(report_json), "--markdown", str(report_md), "-q"]) == 0
    printed, err = capsys.readouterr()
    assert "clean-only control" in printed and err == ""
    rows = json.loads(report_json.read_text())["rows"]
    assert {r["train_set"] for r in rows} == {"clean", "protected", "mix", "clean-only control"}
    assert report_md.read_text().strip() == printed.strip()
    assert main(["evaluate", "--protected", str(out), "--test", str(src), "--clean", str(src), "--protocol",
                 "finetune", "--epochs", "1", "--json", str(report_json), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "Protocol: finetune" in printed and "| fine-tuned on protected | 0.50 |" in printed
    assert json.loads(report_json.read_text())["protocol"] == "finetune"
    assert main(["evaluate", "--protected", str(out), "--test", str(src), "--protocol", "finetune", "-q"]) == 2
    assert "needs clean=" in capsys.readouterr().err


def test_demo_runs_every_method_end_to_end_on_a_small_slice(tmp_path):
    """The README's first command, shrunk: clean, random, both EM modes and bayes in one table and one JSON."""
    out = tmp_path / "demo"
    assert main(["demo", "--max-train", "100", "--max-test", "50", "--epochs", "1", "-q",
                 "--classwise-option", "min_iters=1", "--classwise-option", "max_iters=1",
                 "--samplewise-option", "min_iters=1", "--samplewise-option", "max_iters=1",
                 "--samplewise-option", "steps=1", "--bayes-option", "passes=1", "--output-dir", str(out)]) == 0
    result = json.loads((out / "demo.json").read_text())
    assert [r["method"] for r in result["rows"]] == ["clean", "random", "EM class-wise", "EM sample-wise", "bayes"]
    assert all(0 <= r["test_accuracy"] <= 1 for r in result["rows"])
    assert result["bayes"] == {"passes": 1} and result["bayes_stats"]["passes"] == 1
    assert 0 < result["bayes_stats"]["max_abs_steps"] <= 8
    assert result["bayes_stats"]["bayes_error_before"] is not None
    md = (out / "demo.md").read_text()
    assert '| bayes | craft(ds, "bayes", passes=1) + protect(noise=...) |' in md
    assert "whole-set Bayes-error estimate" in md


# -- train-surrogate and the working-resolution / class flags -------------------------------------------------------
FAST_CRAFT = ["--option", "min_iters=1", "--option", "max_iters=1", "--option", "train_steps=1",
              "--option", "batch_size=16"]


@pytest.fixture
def surrogate_dir(tiny, tmp_path, capsys):
    """A 2-class surrogate trained on `tiny` by the command line (1 epoch)."""
    src, _ = tiny
    out = tmp_path / "surrogates" / "mine"
    assert main(["train-surrogate", "--data", str(src), "--test", str(src), "--epochs", "1", "--width", "8",
                 "--seed", "1", "--output", str(out), "-q"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    return out


def test_train_surrogate_writes_a_surrogate_folder(tiny, surrogate_dir, tmp_path, capsys):
    from hf_unlearnable import Surrogate

    src, _ = tiny
    assert sorted(p.name for p in surrogate_dir.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    cfg = json.loads((surrogate_dir / "config.json").read_text())
    assert cfg["num_classes"] == 2 and cfg["class_names"] == ["a", "b"] and cfg["image_size"] == [32, 32]
    t = cfg["training"]
    assert t["train_rows"] == 16 and t["epochs"] == 1 and t["seed"] == 1 and 0 <= t["test_accuracy"] <= 1
    assert "2 classes" in (surrogate_dir / "README.md").read_text()
    assert Surrogate.from_pretrained(surrogate_dir).num_classes == 2
    assert _leftovers(surrogate_dir.parent) == []
    # an existing folder is refused before any training, replaced with --overwrite
    again = ["train-surrogate", "--data", str(src), "--epochs", "1", "--width", "8", "--resolution", "16",
             "--output", str(surrogate_dir), "-q"]
    assert main(again) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*again, "--overwrite"]) == 0
    assert json.loads((surrogate_dir / "config.json").read_text())["image_size"] == [16, 16]
    assert _leftovers(surrogate_dir.parent) == []
    # and protect uses it
    out = tmp_path / "prot"
    assert main(["protect", "--data", str(src), "--method", "em", "--option", f"surrogate={surrogate_dir}",
                 "--option", "steps=1", "--output", str(out), "-q"]) == 0
    assert len(datasets.load_from_disk(str(out))) == 16


def test_train_surrogate_pushes_to_the_hub(tiny, hub, tmp_path, capsys):
    from hf_unlearnable import Surrogate

    src, _ = tiny
    repo_id = hub.repo_id("my-surrogate")
    assert main(["train-surrogate", "--data", str(src), "--epochs", "1", "--width", "8", "--push", repo_id,
                 "-q"]) == 0
    assert repo_id in capsys.readouterr().out
    sur = Surrogate.from_pretrained(repo_id)
    assert sur.num_classes == 2 and sur.config.class_names == ["a", "b"]
    assert "README.md" in hub.api().list_repo_files(repo_id)


def test_train_surrogate_bad_inputs_are_clean_errors(tiny, tmp_path, capsys):
    src, ds = tiny
    one_class = tmp_path / "one-class"
    ds.filter(lambda r: r["label"] == 0).save_to_disk(str(one_class))
    capsys.readouterr()
    out = tmp_path / "o"
    base = ["train-surrogate", "--epochs", "1", "--width", "8", "-q"]
    cases = [
        ([*base, "--data", str(src)], "--output"),                                            # nowhere to put it
        ([*base, "--data", str(src), "--output", str(out), "--private"], "--push"),
        ([*base, "--data", str(src), "--output", str(out), "--resolution", "4"], "8x8"),
        ([*base, "--data", str(one_class), "--output", str(out)], "at least 2 classes"),
        ([*base, "--data", str(src), "--label-column", "note", "--output", str(out)], "note"),
        ([*base, "--data", str(src), "--output", str(out), "--adversarial-epsilon", "2"], "2/255"),
        ([*base, "--data", str(tmp_path / "missing"), "--output", str(out)], "does not exist"),
        ([*base, "--data", str(src), "--output", str(src), "--overwrite"], "would replace the input"),
    ]
    for argv, needle in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and needle in err and "Traceback" not in err, (argv, err)
    for argv in ([*base, "--data", str(src), "--output", str(out), "--epochs", "0"],
                 [*base, "--data", str(src), "--output", str(out), "--arch", "vit"]):
        assert main(argv) == 2                      # argparse's usage errors
        assert "Traceback" not in capsys.readouterr().err
    assert not out.exists() and _leftovers(tmp_path) == []


def test_parse_class_map():
    assert parse_class_map("index") == "index"
    assert parse_class_map('{"tabby": "cat", "3": 5, "-1": 0}') == {"tabby": "cat", 3: 5, -1: 0}
    for bad in ("nope", "[1, 2]", "3", '{"a": '):
        with pytest.raises(argparse.ArgumentTypeError, match="index"):
            parse_class_map(bad)


def test_resolution_flags_reach_protect_craft_and_evaluate(tiny, surrogate_dir, tmp_path):
    src, _ = tiny
    out, noise_dir = tmp_path / "prot", tmp_path / "noise"
    assert main(["protect", "--data", str(src), "--method", "em", "--option", f"surrogate={surrogate_dir}",
                 "--option", "steps=1", "--resolution", "16", "--output", str(out), "-q"]) == 0
    prot = datasets.load_from_disk(str(out)).cast_column("img", datasets.Image(decode=False))
    assert _pixels(prot["img"][0]).shape == (32, 32, 3)          # the release keeps the images' own size
    assert main(["craft", "--data", str(src), "--method", "em", "--mode", "classwise", *FAST_CRAFT,
                 "--resolution", "16", "--output", str(noise_dir), "-q"]) == 0
    from hf_unlearnable import load_noise

    assert load_noise(str(noise_dir)).steps.shape[1:3] == (16, 16)
    assert main(["evaluate", "--protected", str(out), "--test", str(src), "--epochs", "1", "--resolution", "16",
                 "-q"]) == 0
    assert main(["evaluate", "--protected", str(out), "--test", str(src), "--epochs", "1", "--resolution", "0",
                 "-q"]) == 2


def test_clusters_and_class_map_flags(tiny, tmp_path, capsys):
    src, ds = tiny
    unlabelled, renamed = tmp_path / "unlabelled", tmp_path / "renamed"
    ds.remove_columns("label").save_to_disk(str(unlabelled))
    ds.cast_column("label", datasets.ClassLabel(names=["x", "y"])).save_to_disk(str(renamed))
    noise_dir, clustered = tmp_path / "noise", tmp_path / "clustered"
    assert main(["craft", "--data", str(unlabelled), "--method", "em", "--mode", "classwise", *FAST_CRAFT,
                 "--clusters", "2", "--output", str(clustered), "-q"]) == 0
    from hf_unlearnable import load_noise

    assert load_noise(str(clustered)).config.clustering["clusters"] == 2
    # --clusters on labelled data: the library's error, one line
    assert main(["craft", "--data", str(src), "--method", "em", "--clusters", "2", "--output",
                 str(tmp_path / "x"), "-q"]) == 2
    assert "clusters=" in capsys.readouterr().err
    assert main(["craft", "--data", str(src), "--method", "em", "--mode", "classwise", *FAST_CRAFT,
                 "--output", str(noise_dir), "-q"]) == 0
    # noise crafted on classes a, b applied to a dataset whose classes are x, y: only with an explicit map
    assert main(["protect", "--data", str(renamed), "--noise", str(noise_dir), "--output", str(tmp_path / "p0"),
                 "-q"]) == 2
    capsys.readouterr()
    for i, mapping in enumerate(["index", '{"x": "b", "y": "a"}', '{"0": 1, "1": 0}']):
        assert main(["protect", "--data", str(renamed), "--noise", str(noise_dir), "--class-map", mapping,
                     "--output", str(tmp_path / f"p{i + 1}"), "-q"]) == 0, mapping
    assert main(["protect", "--data", str(renamed), "--noise", str(noise_dir), "--class-map", "nope",
                 "--output", str(tmp_path / "p9"), "-q"]) == 2
    assert "index" in capsys.readouterr().err


def test_mixed_sizes_and_modes_through_the_command_line(tmp_path):
    """A folder of images of different sizes and modes: crafted, protected and evaluated from the command line;
    every image comes back at its own size and mode."""
    rng = np.random.default_rng(4)
    cells, shapes = [], []
    for i in range(12):
        h, w = int(rng.integers(20, 60)), int(rng.integers(20, 60))
        mode = ("RGB", "L", "RGBA")[i % 3]
        arr = rng.integers(0, 256, (h, w, len(mode)), dtype=np.uint8)
        buf = io.BytesIO()
        PIL.Image.fromarray(arr[..., 0] if mode == "L" else arr, mode=mode).save(buf, format="PNG")
        cells.append({"bytes": buf.getvalue(), "path": None})
        shapes.append(((w, h), mode))
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    src = tmp_path / "mixed"
    datasets.Dataset.from_dict({"img": cells, "label": [i % 2 for i in range(12)]}, features=features) \
        .save_to_disk(str(src))
    noise_dir, out = tmp_path / "noise", tmp_path / "out"
    assert main(["craft", "--data", str(src), "--method", "em", "--mode", "classwise", *FAST_CRAFT,
                 "--output", str(noise_dir), "-q"]) == 0
    assert main(["protect", "--data", str(src), "--noise", str(noise_dir), "--output", str(out), "-q"]) == 0
    prot = datasets.load_from_disk(str(out)).cast_column("img", datasets.Image(decode=False))
    for cell, (size, mode) in zip(prot["img"], shapes):
        img = PIL.Image.open(io.BytesIO(cell["bytes"]))
        assert (img.size, img.mode) == (size, mode)
    assert main(["evaluate", "--protected", str(out), "--test", str(src), "--epochs", "1", "-q"]) == 0
