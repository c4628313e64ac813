"""Fuzzing every public entry point and hostile artefact folders (hypothesis). The invariant: a ProtectionError (the
CLI parsers: a usage error, exit 2) or a correct result, never another exception, never a silent empty or partial
result.

The default run tries a bounded number of examples per test; `HF_UNLEARNABLE_FUZZ=slow` (`make fuzz`) tries many more.
Iteration counts (epochs, rounds, steps) are fuzzed among invalid values and small valid ones only: a valid huge
count is a long run, not a fault. With HF_UNLEARNABLE_FUZZ_REPORT=path the outcome counts are written there as JSON.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_unlearnable import ProtectionError, certify, craft, evaluate, load_noise, protect
from hf_unlearnable.methods import METHODS
from tests.conftest import CLASS_NAMES, FAST_OPTIONS, build_dataset, png_cell, stored_arrays, tiny_images

SLOW = os.environ.get("HF_UNLEARNABLE_FUZZ") == "slow"
settings.register_profile("fuzz", max_examples=400 if SLOW else 20, deadline=None, derandomize=not SLOW,
                          suppress_health_check=list(HealthCheck))
FUZZ = settings.get_profile("fuzz")
OUTCOMES: Counter = Counter()

# values a careless or hostile caller passes: wrong types, out of range, non-finite, huge, empty, nested
HOSTILE = st.one_of(
    st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.integers(-3, 70),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([8 / 255, 0.5, 1e-300, 1e300, 255.0]),
    st.text(max_size=6), st.sampled_from(["", "img", "label", "caption", "\x00", "index", "8/255"]),
    st.lists(st.integers(-5, 300), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(-2, 12), max_size=2),
)
COUNT = st.one_of(st.sampled_from([1, 2]), st.integers(-3, 0), st.sampled_from([None, 1.5, "2", True, float("nan")]))


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    path = os.environ.get("HF_UNLEARNABLE_FUZZ_REPORT")
    if path:
        Path(path).write_text(json.dumps(dict(OUTCOMES), indent=1, sort_keys=True))


def outcome(entry: str, call, refusals: tuple = (ProtectionError,)):
    """Run `call`; count a refusal (a ProtectionError, or for the CLI's parsers a usage error) or a result (returned
    for checking); any other exception fails the test."""
    OUTCOMES[f"{entry}:tried"] += 1
    try:
        result = call()
    except refusals as exc:
        OUTCOMES[f"{entry}:{type(exc).__name__}"] += 1
        return None
    OUTCOMES[f"{entry}:result"] += 1
    return result


_DS = {}


def tiny(n: int = 10, size: int = 12):
    if (n, size) not in _DS:
        _DS[n, size] = build_dataset(tiny_images(n, size=size), labels=[i % 3 for i in range(n)])
    return _DS[n, size]


def check_protected(src, out, epsilon: float, method: str | None = None) -> None:
    """A correct release: every row, in order, other columns kept, each image changed (or, for a method that sets
    pixels, already holding them) and within the budget in the method's norm."""
    from hf_unlearnable import _norms

    assert out.num_rows == src.num_rows and out["extra"] == src["extra"]
    cls = METHODS.get(method)
    norm = cls.norm if cls is not None else "linf"
    levels = math.floor(epsilon * 255 + 1e-6)
    for a, b in zip(stored_arrays(src), stored_arrays(out)):
        diff = np.abs(a.astype(int) - b.astype(int))
        if norm == "linf":
            assert diff.max() <= levels
        else:
            assert _norms.measure(norm, diff) <= _norms.budget(norm, epsilon, a.shape) + 1e-6
        assert diff.any() or cls.sets_pixels


# -- protect -----------------------------------------------------------------------------------------------------
@FUZZ
@given(method=st.sampled_from(sorted(m for m, c in METHODS.items() if c.per_batch)),
       kwargs=st.dictionaries(st.sampled_from(["epsilon", "seed", "resolution", "image_column", "label_column",
                                               "id_column", "class_map", "mode", "random_start", "step_size"]),
                              HOSTILE, max_size=3))
def test_fuzz_protect(method, kwargs, tiny_surrogate_dir):
    ds = tiny()
    if method in ("em", "bayes"):
        kwargs = {"steps": 1, "surrogate": tiny_surrogate_dir, **kwargs}

    def run():
        return ds.map(protect(method=method, **kwargs), batched=True, with_indices=True, load_from_cache_file=False)

    out = outcome("protect", run)
    if out is not None:
        eps = kwargs.get("epsilon")
        check_protected(ds, out, METHODS[method].config_class.epsilon if eps is None else eps, method)


# -- craft -------------------------------------------------------------------------------------------------------
@FUZZ
@given(method=st.sampled_from(["random", "em", "pue"]),
       kwargs=st.dictionaries(st.sampled_from(["epsilon", "seed", "resolution", "clusters", "label_column",
                                               "id_column", "mode", "subset", "lr", "stop_error", "class_step",
                                               "surrogate_width", "noise_batch_size"]), HOSTILE, max_size=3),
       counts=st.dictionaries(st.sampled_from(["max_iters", "min_iters", "steps", "train_steps"]), COUNT,
                              max_size=2))
def test_fuzz_craft(method, kwargs, counts, tmp_path_factory):
    ds = tiny()
    options = {**FAST_OPTIONS.get(method, {}), **kwargs, **counts} if method != "random" else kwargs
    noise = outcome("craft", lambda: craft(ds, method, **options))
    if noise is not None:
        out = outcome("protect-crafted", lambda: ds.map(protect(noise=noise), batched=True, with_indices=True))
        if out is not None:
            check_protected(ds, out, noise.epsilon)
        folder = tmp_path_factory.mktemp("noise") / "n"
        noise.save_pretrained(folder)
        back = load_noise(folder)
        assert back.ids == noise.ids and np.array_equal(back.steps, noise.steps)


# -- evaluate and certify ----------------------------------------------------------------------------------------
@FUZZ
@given(kwargs=st.dictionaries(st.sampled_from(["mix", "defences", "victim", "resolution", "seed", "clean",
                                               "label_column", "image_column"]), HOSTILE, max_size=2),
       epochs=COUNT)
def test_fuzz_evaluate(kwargs, epochs):
    ds = tiny()
    if "clean" in kwargs and kwargs["clean"] is not None:
        kwargs["clean"] = ds if kwargs["clean"] is True else kwargs["clean"]
    report = outcome("evaluate", lambda: evaluate(ds, ds, epochs=epochs, progress=False, **kwargs))
    if report is not None:
        accuracy = report.accuracy("protected", 1.0)
        assert 0 <= accuracy <= 1 and report.sizes["train"] == ds.num_rows


@FUZZ
@given(kwargs=st.dictionaries(st.sampled_from(["q", "sigma", "confidence", "etas", "seed", "resolution", "victim"]),
                              HOSTILE, max_size=2), n=COUNT, epochs=COUNT)
def test_fuzz_certify(kwargs, n, epochs):
    ds = tiny()
    n = n if n is None or not isinstance(n, int) or n < 1 else 20
    cert = outcome("certify", lambda: certify(ds, ds, n=n, epochs=epochs, progress=False, **kwargs))
    if cert is not None:
        assert 0 <= cert.base_accuracy <= 1 and all(0 <= a <= 1 for a in cert.accuracies)


# -- hostile artefact folders ------------------------------------------------------------------------------------
JSON_VALUE = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-2 ** 64, 2 ** 64),
                                    st.floats(allow_nan=False), st.text(max_size=8)),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                      max_size=3), max_leaves=6)
NOISE_FIELDS = ["method", "kind", "epsilon", "image_shape", "class_names", "method_config", "stats", "clustering",
                "resolution", "library_version", "source"]


@st.composite
def noise_folders(draw):
    config = {"method": "em", "kind": draw(st.sampled_from(["classwise", "samplewise", "pixel"])),
              "epsilon": 8 / 255, "image_shape": [4, 4, 3]}
    for key in draw(st.lists(st.sampled_from(NOISE_FIELDS), max_size=3)):
        config[key] = draw(JSON_VALUE)
    k = draw(st.integers(1, 3))
    dtype = draw(st.sampled_from(["int8", "uint8", "int64", "float32"]))
    tensors = {"steps": np.asarray(draw(st.lists(st.integers(-12, 12), min_size=k * 48, max_size=k * 48)))
               .astype(dtype).reshape(k, 4, 4, 3)}
    if draw(st.booleans()):
        width = draw(st.integers(1, 4))
        tensors["ids"] = np.asarray(draw(st.lists(st.integers(0, 255), min_size=k * width, max_size=k * width)),
                                    dtype=np.uint8).reshape(k, width)
        if draw(st.booleans()):
            tensors["id_lengths"] = np.asarray(draw(st.lists(st.integers(-2, 6), min_size=k, max_size=k)),
                                               dtype=np.int64)
    if draw(st.booleans()):
        tensors["centroids"] = np.asarray(draw(st.lists(st.floats(-2, 2), min_size=k * 2, max_size=k * 2)),
                                          dtype=np.float32).reshape(k, 2)
    raw = draw(st.one_of(st.none(), st.binary(max_size=64)))
    return config, tensors, raw


@FUZZ
@given(folder=noise_folders())
def test_fuzz_noise_folders(folder, tmp_path_factory):
    from safetensors.numpy import save_file

    config, tensors, raw = folder
    path = tmp_path_factory.mktemp("hostile-noise")
    (path / "config.json").write_text(json.dumps(config))
    if raw is None:
        save_file(tensors, str(path / "noise.safetensors"))
    else:
        (path / "noise.safetensors").write_bytes(raw)
    noise = outcome("load_noise", lambda: load_noise(path))
    if noise is not None:
        ds = build_dataset([np.full((4, 4, 3), 128, dtype=np.uint8) for _ in range(3)], labels=[0, 1, 2])
        out = outcome("protect-loaded", lambda: ds.map(protect(noise=noise, class_map="index"), batched=True,
                                                       with_indices=True))
        if out is not None:
            check_protected(ds, out, noise.epsilon)


SURROGATE_FIELDS = {"arch": st.sampled_from(["convnet", "resnet18", "transformers", "mlp"]) | JSON_VALUE,
                    "width": st.sampled_from([8, 16, 0, -1, 10 ** 6, None]) | JSON_VALUE,
                    "num_classes": st.sampled_from([10, 11, 0, 10 ** 12]) | JSON_VALUE,
                    "image_size": st.sampled_from([[32, 32], [0, 5], "32"]) | JSON_VALUE,
                    "class_names": st.sampled_from([CLASS_NAMES, ["a"], None]) | JSON_VALUE,
                    "hf_config": st.sampled_from([None, {"model_type": "vit", "hidden_size": 10 ** 6}]) | JSON_VALUE}


@FUZZ
@given(changes=st.fixed_dictionaries({}, optional=SURROGATE_FIELDS))
def test_fuzz_surrogate_folders(changes, tiny_surrogate_dir, tmp_path_factory):
    import shutil

    from hf_unlearnable.surrogates import load_surrogate

    path = tmp_path_factory.mktemp("hostile-surrogate") / "s"
    shutil.copytree(tiny_surrogate_dir, path)
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))
    sur = outcome("load_surrogate", lambda: load_surrogate(str(path)))
    if sur is not None:
        import torch

        with torch.no_grad():
            assert sur(torch.rand(2, 3, 32, 32)).shape == (2, sur.num_classes)


# -- the command line's parsers ----------------------------------------------------------------------------------
FLAGS = ["--data", "--method", "--epsilon", "--seed", "--option", "--output", "--resolution", "--class-map",
         "--num-proc", "--batch-size", "--mix", "--epochs", "--clusters", "--mode", "-v", "-q", "--overwrite"]


@FUZZ
@given(command=st.sampled_from(["protect", "craft", "evaluate", "certify", "train-surrogate", "demo", "bogus"]),
       argv=st.lists(st.one_of(st.sampled_from(FLAGS), st.text(max_size=8), st.sampled_from(["8/255", "k=v", "1e400",
                                                                                          "index", "{\"a\": 1}"])),
                     max_size=6))
def test_fuzz_cli_parsers(command, argv):
    import argparse

    from hf_unlearnable.cli import build_parser, parse_class_map, parse_epsilon, parse_options

    class UsageError(Exception):
        pass

    def parse():
        try:
            return build_parser().parse_args([command, *argv])
        except SystemExit as exc:     # argparse printed a usage error: the CLI exits 2
            assert exc.code == 2
            raise UsageError from None

    outcome("cli-parse", parse, (UsageError,))
    for text in argv:   # a flag's value parser reports a bad value as argparse's type error (then exit 2)
        for fn in (parse_epsilon, parse_class_map):
            outcome("cli-value", lambda: fn(text), (ProtectionError, argparse.ArgumentTypeError))
        outcome("cli-options", lambda: parse_options([text]))
