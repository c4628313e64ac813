"""A downloaded surrogate's config.json is believed only where its weights agree: sizes are checked against the
safetensors header before anything is allocated, and weights that fit none of the model's tensors are refused."""

from __future__ import annotations

import json
import resource
import shutil

import pytest

from hf_unlearnable import ProtectionError
from hf_unlearnable.surrogates import Surrogate, load_surrogate


def _edited(src, tmp_path, **changes):
    out = tmp_path / "edited"
    shutil.copytree(src, out)
    cfg = json.loads((out / "config.json").read_text())
    cfg.update(changes)
    (out / "config.json").write_text(json.dumps(cfg))
    return out


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("changes, match", [
    ({"num_classes": 10 ** 12}, "num_classes"),
    ({"width": 10 ** 6}, "width"),
    ({"width": "big"}, "width"),
    ({"width": 0}, "width"),
    ({"width": 64}, "does not fit"),          # in range, but not the width of these weights: still no allocation
    ({"num_classes": 11, "class_names": None}, "does not fit"),
    ({"image_size": "32"}, "image_size"),
    ({"class_names": ["a"]}, "class_names"),
    ({"arch": ["convnet"]}, "arch"),
])
def test_config_sizes_are_checked_before_allocation(tiny_surrogate_dir, tmp_path, changes, match):
    before = _peak_mb()
    with pytest.raises(ProtectionError, match=match):
        load_surrogate(str(_edited(tiny_surrogate_dir, tmp_path, **changes)))
    assert _peak_mb() - before < 200


def test_transformers_config_larger_than_its_weights_is_refused(tiny_vit_dir, tmp_path):
    before = _peak_mb()
    with pytest.raises(ProtectionError, match="describes .* parameters"):
        Surrogate.from_pretrained(_edited(tiny_vit_dir, tmp_path, hidden_size=10 ** 6, intermediate_size=10 ** 6))
    assert _peak_mb() - before < 200


def test_transformers_weights_that_match_no_tensor_are_refused(tiny_vit_dir, tmp_path):
    """Before: transformers filled every tensor with random values and the surrogate loaded."""
    from safetensors.torch import load_file, save_file

    out = _edited(tiny_vit_dir, tmp_path)
    tensors = load_file(str(out / "model.safetensors"))
    save_file({f"renamed.{k}": v for k, v in tensors.items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    with pytest.raises(ProtectionError, match="lack .* tensors"):
        Surrogate.from_pretrained(out)
