"""The Hub side of hf_unlearnable against the loopback server, with the real clients: Noise and Surrogate
artefacts (push / from_pretrained / revisions / private repos / pickle refusal), transformers surrogates, and
push_protected (round trip, streaming, one config per method, branches, cards that never clobber, the token scan).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from hf_unlearnable import Noise, ProtectionError, Surrogate, load_noise, protect, push_protected
from hf_unlearnable.noise import NoiseConfig
from tests.conftest import CLASS_NAMES, build_dataset, stored_cells


class _Booby:
    """Unpickling this creates a marker file: proof that something was unpickled."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path(self.marker).touch, ())


def classwise_noise(seed: int = 0, epsilon_255: int = 8, method: str = "em") -> Noise:
    rng = np.random.default_rng(seed)
    steps = rng.integers(-epsilon_255, epsilon_255 + 1, (10, 32, 32, 3)).astype(np.int8)
    cfg = NoiseConfig(method=method, kind="classwise", epsilon=epsilon_255 / 255, image_shape=[32, 32, 3],
                      num_classes=10, class_names=CLASS_NAMES, seed=seed,
                      method_config={"mode": "classwise", "seed": seed})
    return Noise(steps, cfg)


def hub_files(hub, repo_id, repo_type="model", revision=None):
    return sorted(hub.api().list_repo_files(repo_id, repo_type=repo_type, revision=revision))


# -- Noise ---------------------------------------------------------------------------------------------------------
def test_noise_push_load_round_trip_and_card(hub):
    noise = classwise_noise(1)
    repo_id = hub.repo_id("noise")
    noise.push_to_hub(repo_id, license="mit")
    assert hub_files(hub, repo_id) == [".gitattributes", "README.md", "config.json", "noise.safetensors"]
    loaded = load_noise(repo_id)
    np.testing.assert_array_equal(loaded.steps, noise.steps)
    assert loaded.config == noise.config
    card = (Path(hub.api().hf_hub_download(repo_id, "README.md"))).read_text()
    assert "library_name: hf_unlearnable" in card and "license: mit" in card and "8/255" in card
    assert f'load_noise("{repo_id}")' in card and "classwise-noise" in card
    # the loaded noise protects byte for byte as the original
    ds = build_dataset(n=10)
    a, b = ds.map(protect(noise=noise), batched=True), ds.map(protect(noise=loaded), batched=True)
    assert [c["bytes"] for c in stored_cells(a)] == [c["bytes"] for c in stored_cells(b)]


def test_noise_revisions_branches_and_tags(hub):
    api = hub.api()
    repo_id = hub.repo_id("noise-rev")
    first, second, third = classwise_noise(1), classwise_noise(2), classwise_noise(3)
    sha1 = first.push_to_hub(repo_id).oid
    api.create_tag(repo_id, tag="v1")
    second.push_to_hub(repo_id)
    third.push_to_hub(repo_id, branch="dev")
    np.testing.assert_array_equal(load_noise(repo_id).steps, second.steps)
    np.testing.assert_array_equal(load_noise(repo_id, revision="v1").steps, first.steps)
    np.testing.assert_array_equal(load_noise(repo_id, revision=sha1).steps, first.steps)
    np.testing.assert_array_equal(load_noise(repo_id, revision="dev").steps, third.steps)
    with pytest.raises(ProtectionError, match="no revision 'nope'"):
        load_noise(repo_id, revision="nope")
    with pytest.raises(ProtectionError, match="revision=.v1. applies to Hub repos"):
        load_noise(first.save_pretrained(hub.session_dir / f"local-{os.urandom(3).hex()}"), revision="v1")


def test_existing_noise_card_is_kept_unless_overwrite(hub):
    api = hub.api()
    repo_id = hub.repo_id("noise-card")
    api.create_repo(repo_id)
    api.upload_file(path_or_fileobj=b"# my own words\n", path_in_repo="README.md", repo_id=repo_id)
    classwise_noise(1).push_to_hub(repo_id)
    assert Path(api.hf_hub_download(repo_id, "README.md")).read_text() == "# my own words\n"
    classwise_noise(1).push_to_hub(repo_id, overwrite_card=True)
    assert "library_name: hf_unlearnable" in Path(api.hf_hub_download(repo_id, "README.md")).read_text()


def test_private_noise_needs_the_owner(hub, tmp_path):
    repo_id = hub.repo_id("noise-private")
    classwise_noise(1).push_to_hub(repo_id, private=True)
    assert hub.api().model_info(repo_id).private
    assert load_noise(repo_id).config.seed == 1
    for token in (False, hub.tokens["bob"]):
        with pytest.raises(ProtectionError, match="no repo .* you can read"):
            load_noise(repo_id, token=token, force_download=True)
        with pytest.raises(ProtectionError, match="no repo .* you can read"):   # a fresh cache
            load_noise(repo_id, token=token, cache_dir=tmp_path / "cache")
    from huggingface_hub.errors import HfHubHTTPError

    with pytest.raises(HfHubHTTPError) as e:  # bob cannot push into alice's namespace
        classwise_noise(2).push_to_hub(repo_id, token=hub.tokens["bob"])
    assert e.value.response.status_code in (403, 404)


@pytest.mark.parametrize("what", ["noise", "surrogate"])
def test_pickles_in_a_hub_repo_are_never_loaded(hub, tmp_path, what, tiny_surrogate_dir):
    from huggingface_hub import snapshot_download

    api = hub.api()
    marker = tmp_path / "UNPICKLED"
    evil = pickle.dumps(_Booby(marker))
    load = load_noise if what == "noise" else Surrogate.from_pretrained
    # (a) safetensors plus pickles beside them: the safetensors load, the pickles are not even downloaded
    folder = classwise_noise(1).save_pretrained(tmp_path / "n") if what == "noise" else Path(tiny_surrogate_dir)
    repo_id = hub.repo_id(f"{what}-with-pickles")
    api.create_repo(repo_id)
    api.upload_folder(repo_id=repo_id, folder_path=folder)
    for name in ("noise.bin", "pytorch_model.bin", "model.pt", "extra.pkl"):
        api.upload_file(path_or_fileobj=evil, path_in_repo=name, repo_id=repo_id)
    loaded = load(repo_id)
    assert loaded is not None and not marker.exists()
    cached = Path(snapshot_download(repo_id, local_files_only=True, allow_patterns=["*"]))
    assert not any(p.suffix in (".bin", ".pt", ".pkl") for p in cached.rglob("*")), "a pickle was downloaded"
    # (b) pickles only: refused, with the file names in the message
    only = hub.repo_id(f"{what}-only-pickles")
    api.create_repo(only)
    api.upload_file(path_or_fileobj=(folder / "config.json").read_bytes(), path_in_repo="config.json", repo_id=only)
    api.upload_file(path_or_fileobj=evil, path_in_repo="pytorch_model.bin", repo_id=only)
    with pytest.raises(ProtectionError, match=r"pickle files \['pytorch_model.bin'\]"):
        load(only)
    assert not marker.exists(), "a pickle file was unpickled"


# -- Surrogates ----------------------------------------------------------------------------------------------------
def test_surrogate_push_load_and_use_as_surrogate(hub, tiny_surrogate_dir):
    import torch

    sur = Surrogate.from_pretrained(tiny_surrogate_dir)
    repo_id = hub.repo_id("surrogate")
    sur.push_to_hub(repo_id)
    assert hub_files(hub, repo_id) == [".gitattributes", "README.md", "config.json", "model.safetensors"]
    back = Surrogate.from_pretrained(repo_id)
    for (k, v), (k2, v2) in zip(sur.model.state_dict().items(), back.model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    card = Path(hub.api().hf_hub_download(repo_id, "README.md")).read_text()
    assert "pipeline_tag: image-classification" in card and f'surrogate="{repo_id}"' in card
    ds = build_dataset(n=6)
    a = ds.map(protect(method="em", steps=2, surrogate=repo_id), batched=True)
    b = ds.map(protect(method="em", steps=2, surrogate=tiny_surrogate_dir), batched=True)
    assert [c["bytes"] for c in stored_cells(a)] == [c["bytes"] for c in stored_cells(b)]


def test_transformers_image_classifier_as_surrogate(hub, tiny_vit_dir, tmp_path):
    import torch
    from transformers import ViTForImageClassification

    from hf_unlearnable.surrogates import load_surrogate

    api = hub.api()
    repo_id = hub.repo_id("tiny-vit")
    api.create_repo(repo_id)
    api.upload_folder(repo_id=repo_id, folder_path=tiny_vit_dir)
    marker = tmp_path / "UNPICKLED"
    api.upload_file(path_or_fileobj=pickle.dumps(_Booby(marker)), path_in_repo="pytorch_model.bin", repo_id=repo_id)
    net = ViTForImageClassification.from_pretrained(tiny_vit_dir).eval()
    x = torch.rand(3, 3, 32, 32)   # CIFAR-sized input: resized to the model's 16x16 inside the surrogate
    x16 = torch.nn.functional.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    with torch.no_grad():
        ref = net(pixel_values=(x16 - 0.5) / 0.25, output_hidden_states=True)
    for spec in (repo_id, str(tiny_vit_dir)):
        sur = load_surrogate(spec)
        assert sur.num_classes == 10 and sur.config.class_names == CLASS_NAMES
        with torch.no_grad():
            torch.testing.assert_close(sur(x), ref.logits)
            # features = what the classifier head reads: the layer-normed CLS token for ViT
            torch.testing.assert_close(sur.features(x), net.vit.layernorm(ref.hidden_states[-1])[:, 0])
    assert not marker.exists()
    # a model object, without a preprocessor: no normalisation
    obj = load_surrogate(net)
    with torch.no_grad():
        torch.testing.assert_close(obj(x), net(pixel_values=x16).logits)
    # gradients reach the pixels through features() (what bayes needs) and forward() (what EM needs)
    xg = x.clone().requires_grad_(True)
    sur.features(xg).pow(2).sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0
    # it round-trips as an hf_unlearnable surrogate and drives EM inside Dataset.map (the transform pickles it)
    saved = Surrogate.from_pretrained(sur.save_pretrained(tmp_path / "as-ours"))
    with torch.no_grad():
        torch.testing.assert_close(saved(x), sur(x))
    ds = build_dataset(n=4)
    out = ds.map(protect(method="em", steps=1, surrogate=sur), batched=True)
    from tests.conftest import stored_arrays

    for p, o in zip(stored_arrays(out), stored_arrays(ds)):
        assert np.abs(p.astype(int) - o.astype(int)).max() <= 8


def test_a_repos_own_code_is_never_run(tmp_path):
    """A classifier whose config names an architecture only its own .py defines (auto_map): refused with a clear
    error, its code never imported, even with "y" waiting on stdin for transformers' trust_remote_code prompt."""
    import subprocess
    import sys

    from safetensors.torch import save_file

    marker = tmp_path / "RAN"
    repo = tmp_path / "custom"
    repo.mkdir()
    (repo / "config.json").write_text(json.dumps({"model_type": "customnet", "auto_map": {
        "AutoConfig": "custom.CustomConfig", "AutoModelForImageClassification": "custom.CustomModel"}}))
    (repo / "custom.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    save_file({"w": __import__("torch").zeros(1)}, str(repo / "model.safetensors"))
    code = ("from hf_unlearnable import ProtectionError\n"
            "from hf_unlearnable.surrogates import load_surrogate\n"
            f"try:\n    load_surrogate({str(repo)!r})\nexcept ProtectionError as e:\n    print('REFUSED', e)\n")
    out = subprocess.run([sys.executable, "-c", code], input="y\ny\n", capture_output=True, text=True, timeout=300)
    assert "REFUSED" in out.stdout and "never loaded" in out.stdout, out.stdout + out.stderr
    assert not marker.exists()
    # the same through a saved surrogate config whose hf_config carries the auto_map
    from hf_unlearnable.surrogates import Surrogate, SurrogateConfig

    cfg = SurrogateConfig(arch="transformers", num_classes=2, hf_config={"model_type": "customnet", "auto_map": {
        "AutoModelForImageClassification": "custom.CustomModel"}})
    with pytest.raises(ProtectionError, match="remote code is never run"):
        Surrogate(cfg)
    assert not marker.exists()


# -- push_protected ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def source_repo(hub):
    """A 'source' dataset on the loopback Hub with a license in its card, so the protected card inherits it."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.url, token=hub.tokens["alice"])
    repo_id = hub.repo_id("source")
    ds = build_dataset(n=30)
    ds.push_to_hub(repo_id)
    card = Path(api.hf_hub_download(repo_id, "README.md", repo_type="dataset")).read_text()
    api.upload_file(path_or_fileobj=card.replace("---\n", "---\nlicense: mit\n", 1).encode(), path_in_repo="README.md",
                    repo_id=repo_id, repo_type="dataset")
    return repo_id, ds, api.dataset_info(repo_id).sha


def test_push_protected_round_trip_streaming_and_card(hub, source_repo):
    import datasets

    from hf_unlearnable import evaluate

    src_id, ds, src_sha = source_repo
    transform = protect(method="random", seed=5)
    protected = ds.map(transform, batched=True, with_indices=True)
    test = build_dataset(n=20, seed=1)
    report = evaluate(protected, test, clean=ds, mix=[1.0, 0.5], defences=["none", "grayscale"], epochs=1,
                      progress=False)
    repo_id = hub.repo_id("protected")
    result = push_protected(protected, repo_id, transform=transform, original=ds, report=report,
                            source_dataset=src_id, max_shard_size="20KB")
    assert result.config_name == "random-eps8" and result.revision == "main"
    files = hub_files(hub, repo_id, "dataset")
    assert "protection.json" in files and "README.md" in files
    assert sum(f.startswith("random-eps8/train-") for f in files) > 1  # several shards
    # round trip: ids, order and image bytes identical
    back = datasets.load_dataset(repo_id, "random-eps8", split="train")
    assert back.features == protected.features
    assert [c["bytes"] for c in stored_cells(back)] == [c["bytes"] for c in stored_cells(protected)]
    for col in ("label", "caption", "extra"):
        assert back[col] == protected[col]
    streamed = list(datasets.load_dataset(repo_id, "random-eps8", split="train", streaming=True))
    assert [r["extra"] for r in streamed] == protected["extra"]
    assert [np.asarray(r["img"]).tobytes() for r in streamed] == [np.asarray(i).tobytes() for i in protected["img"]]
    # the card says what was done and what it achieved
    card = Path(hub.api().hf_hub_download(repo_id, "README.md", repo_type="dataset")).read_text()
    front = card.split("---\n")[1]
    for line in ("license: mit", "- image-classification", "- multi-class-image-classification", f"- {src_id}",
                 "- hf_unlearnable", "- random", "config_name: random-eps8", "dataset_info:"):
        assert line in front, line
    assert "**The publisher must confirm**" in card  # inherited license, flagged
    assert 'protect(method="random", epsilon=8/255, seed=5)' in card
    assert f"`{src_id}` at revision `{src_sha}`" in card
    assert "**Columns changed:** `img`. Unchanged: `label`, `caption`, `extra`" in card
    q = result.protection["configs"]["random-eps8"]["quality"]
    assert q["linf_255"] <= 8 and 25 < q["psnr_mean"] < 60 and 0.5 < q["ssim_mean"] < 1
    assert f"PSNR {q['psnr_mean']:.2f} dB" in card and f"SSIM {q['ssim_mean']:.4f}" in card
    assert "**Rows changed:** 30 of the 30 rows compared with the originals." in card
    acc = report.accuracy("protected", 1.0)
    assert f"{100 * acc:.2f} %" in card and "grayscale" in card and "vs clean-only control" in card
    assert "## Limits" in card and hf_version() in card
    prot = json.loads(Path(hub.api().hf_hub_download(repo_id, "protection.json", repo_type="dataset")).read_text())
    entry = prot["configs"]["random-eps8"]
    assert entry["seed"] == 5 and entry["epsilon_255"] == "8/255" and entry["splits"] == {"train": 30}
    assert entry["source"] == {"dataset": src_id, "revision": src_sha}
    assert entry["license"] == {"id": "mit", "origin": f"inherited from {src_id}", "confirmed": False}
    assert entry["report"]["rows"] == report.to_dict()["rows"]


def hf_version() -> str:
    import hf_unlearnable

    return hf_unlearnable.__version__


def test_unchanged_rows_and_a_class_map_are_on_the_card(hub):
    """A release with rows left unchanged says so; a bank applied under class_map= records the mapping."""
    import datasets

    ds = build_dataset(n=10)
    steps = np.stack([np.full((16, 16, 3), (-1) ** k * (k % 3 + 1), dtype=np.int8) for k in range(10)])
    bank = Noise(steps, NoiseConfig(method="em", kind="classwise", epsilon=8 / 255, image_shape=[16, 16, 3],
                                    num_classes=10, class_names=[f"b{k}" for k in range(10)]))
    t = protect(noise=bank, class_map="index")
    protected = ds.map(t, batched=True)
    cells = list(protected.cast_column("img", datasets.Image(decode=False))["img"])
    cells[4] = ds.cast_column("img", datasets.Image(decode=False))["img"][4]    # one row released as it was
    mixed = protected.cast_column("img", datasets.Image(decode=False)).remove_columns("img") \
        .add_column("img", cells).cast_column("img", datasets.Image()).select_columns(ds.column_names)
    repo_id = hub.repo_id("partial")
    result = push_protected(mixed, repo_id, transform=t, original=ds)
    entry = result.protection["configs"]["em-classwise-eps8"]
    assert entry["rows_changed"] == {"changed": 9, "of": 10, "unchanged": 1}
    assert entry["noise"]["class_map"] == "index" and entry["noise"]["resolution"] == [16, 16]
    card = Path(hub.api().hf_hub_download(repo_id, "README.md", repo_type="dataset")).read_text()
    assert "**1 rows are unchanged: they are released without protection.**" in card
    assert "class_map = `\"index\"`" in card and "Crafted at 16x16" in card


def test_one_config_per_method_and_epsilon(hub):
    import datasets

    ds = build_dataset(n=20)
    repo_id = hub.repo_id("multi")
    noise = classwise_noise(4, epsilon_255=4)
    t_random = protect(method="random")
    push_protected(ds.map(t_random, batched=True), repo_id, transform=t_random, license="apache-2.0")
    push_protected(ds.map(protect(noise=noise), batched=True), repo_id, noise=noise, original=ds)
    push_protected(ds.select(range(7)).map(t_random, batched=True), repo_id, transform=t_random, split="test")
    names = sorted(datasets.get_dataset_config_names(repo_id))
    assert names == ["em-classwise-eps4", "random-eps8"]
    assert datasets.load_dataset(repo_id, "em-classwise-eps4", split="train").num_rows == 20
    assert datasets.load_dataset(repo_id, "random-eps8", split="test").num_rows == 7
    card = Path(hub.api().hf_hub_download(repo_id, "README.md", repo_type="dataset")).read_text()
    assert "## `em-classwise-eps4`" in card and "## `random-eps8`" in card
    assert "| `random-eps8` | `random` | 8/255 | 0 | 27 |" in card
    assert "license: apache-2.0" in card and "set by the publisher." in card
    assert "not verified: no `original=`" in card      # the random config was pushed without original=
    prot = json.loads(Path(hub.api().hf_hub_download(repo_id, "protection.json", repo_type="dataset")).read_text())
    assert prot["configs"]["random-eps8"]["splits"] == {"train": 20, "test": 7}
    assert prot["configs"]["em-classwise-eps4"]["noise"]["kind"] == "classwise"


def test_a_method_with_an_l2_or_l0_budget_states_its_norm(hub):
    """ar (L2) and ops (L0): the config name, protection.json and the card say the budget in the method's norm."""
    ds = build_dataset(n=12)
    repo_id = hub.repo_id("norms")
    for method in ("ar", "ops"):
        t = protect(method=method)
        result = push_protected(ds.map(t, batched=True), repo_id, transform=t, original=ds)
        assert result.config_name == {"ar": "ar-l2-1", "ops": "ops-l0-1"}[method]
        entry = result.protection["configs"][result.config_name]
        assert entry["norm"] == {"ar": "l2", "ops": "l0"}[method] and entry["epsilon"] == 1.0
        assert entry["epsilon_255"] is None and entry["budget"].startswith({"ar": "L2 1.00", "ops": "L0 1 pixel"}[method])
    push_protected(ds, repo_id, method="ar", epsilon=0.5, config_name="ar-by-name", license="mit")
    card = Path(hub.api().hf_hub_download(repo_id, "README.md", repo_type="dataset")).read_text()
    assert "| `ar-l2-1` | `ar` | L2 1.00 (per 32x32 image" in card and "**Budget:** ε = L0 1 pixel" in card
    assert 'protect(method="ar", epsilon=0.5, seed=None)' in card
    with pytest.raises(ProtectionError, match="L2 budget"):
        push_protected(ds, repo_id, method="ar", epsilon=40.0)


def test_branch_pinning_and_owner_card_text_kept(hub):
    import datasets

    api = hub.api()
    ds = build_dataset(n=12)
    repo_id = hub.repo_id("pinned")
    t = protect(method="random")
    push_protected(ds.map(t, batched=True), repo_id, transform=t)
    # the owner edits the card outside the generated block
    card = Path(api.hf_hub_download(repo_id, "README.md", repo_type="dataset")).read_text()
    card = card.replace("<!-- hf_unlearnable:begin", "Owner's note: contact me first.\n\n<!-- hf_unlearnable:begin")
    card += "\nOwner's footer.\n"
    api.upload_file(path_or_fileobj=card.encode(), path_in_repo="README.md", repo_id=repo_id, repo_type="dataset")
    main_sha = api.dataset_info(repo_id).sha
    t2 = protect(method="random", epsilon=4 / 255)
    push_protected(ds.select(range(5)).map(t2, batched=True), repo_id, transform=t2, revision="dev")
    assert api.dataset_info(repo_id).sha == main_sha  # main untouched
    assert datasets.get_dataset_config_names(repo_id) == ["random-eps8"]
    assert datasets.load_dataset(repo_id, "random-eps4", split="train", revision="dev").num_rows == 5
    dev_card = Path(api.hf_hub_download(repo_id, "README.md", repo_type="dataset", revision="dev")).read_text()
    assert "Owner's note: contact me first." in dev_card and "Owner's footer." in dev_card
    assert dev_card.count("<!-- hf_unlearnable:begin") == 1 and "## `random-eps4`" in dev_card
    # a card with no generated block: kept word for word, ours appended; overwrite_card=True replaces it
    own = hub.repo_id("own-card")
    api.create_repo(own, repo_type="dataset")
    api.upload_file(path_or_fileobj=b"---\nlicense: cc-by-4.0\n---\n# Mine\nHand-written.\n", path_in_repo="README.md",
                    repo_id=own, repo_type="dataset")
    push_protected(ds.map(t, batched=True), own, transform=t, license="mit")
    text = Path(api.hf_hub_download(own, "README.md", repo_type="dataset")).read_text()
    assert "# Mine\nHand-written." in text and "license: cc-by-4.0" in text and "## `random-eps8`" in text
    push_protected(ds.map(t, batched=True), own, transform=t, license="mit", overwrite_card=True)
    text = Path(api.hf_hub_download(own, "README.md", repo_type="dataset")).read_text()
    assert "Hand-written." not in text and "license: mit" in text


def test_private_protected_dataset(hub, tmp_path):
    import datasets
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    ds = build_dataset(n=8)
    t = protect(method="random")
    repo_id = hub.repo_id("private-ds")
    push_protected(ds.map(t, batched=True), repo_id, transform=t, private=True)
    assert hub.api().dataset_info(repo_id).private
    assert datasets.load_dataset(repo_id, "random-eps8", split="train").num_rows == 8
    for token in (False, hub.tokens["bob"]):   # a fresh cache: datasets would otherwise fall back to its cache
        with pytest.raises((datasets.exceptions.DatasetNotFoundError, RepositoryNotFoundError)):
            datasets.load_dataset(repo_id, "random-eps8", split="train", token=token, cache_dir=str(tmp_path / "c"))
    with pytest.raises(HfHubHTTPError):
        push_protected(ds.map(t, batched=True), repo_id, transform=t, token=hub.tokens["bob"])


def test_push_protected_bad_input(hub):
    ds = build_dataset(n=6)
    t = protect(method="random")
    p = ds.map(t, batched=True)
    repo_id = hub.repo_id("bad")
    with pytest.raises(ProtectionError, match="exactly one of transform="):
        push_protected(p, repo_id)
    with pytest.raises(ProtectionError, match="without epsilon="):
        push_protected(p, repo_id, method="random")
    with pytest.raises(ProtectionError, match="config_name="):
        push_protected(p, repo_id, transform=t, config_name="default")
    with pytest.raises(ProtectionError, match=r"column 'caption', row 0"):
        push_protected(p, repo_id, transform=t, original=ds.map(lambda r: {"caption": "x"}))
    with pytest.raises(ProtectionError, match="original= has 5 rows"):
        push_protected(p, repo_id, transform=t, original=ds.select(range(5)))
    with pytest.raises(ProtectionError, match="report= must be"):
        push_protected(p, repo_id, transform=t, report={"rows": []})
    assert not hub.api().repo_exists(repo_id, repo_type="dataset")  # nothing was created on bad input


def test_no_token_in_any_file_card_or_log(hub, tmp_path, caplog, capsys, tiny_surrogate_dir):
    """Push everything with an explicit token while logging at DEBUG, then scan every byte written."""
    token = hub.tokens["alice"]
    caplog.set_level(logging.DEBUG)
    ds = build_dataset(n=8)
    noise = classwise_noise(7)
    repo = hub.repo_id("scan")
    noise.push_to_hub(repo + "-noise", token=token)
    load_noise(repo + "-noise", token=token)
    Surrogate.from_pretrained(tiny_surrogate_dir).push_to_hub(repo + "-sur", token=token)
    result = push_protected(ds.map(protect(noise=noise), batched=True), repo, noise=noise, original=ds, token=token)
    noise.save_pretrained(tmp_path / "saved")
    out, err = capsys.readouterr()
    texts = {"caplog": caplog.text, "stdout": out, "stderr": err, "card": result.card,
             "protection": json.dumps(result.protection), "repr": repr(result)}
    for name, text in texts.items():
        assert token not in text, f"token found in {name}"
    roots = [hub.session_dir, tmp_path]   # HF_HOME, datasets cache, server blobs and request log, saved artefacts
    scanned = 0
    for root in roots:
        for path in Path(root).rglob("*"):
            if path.is_file():
                scanned += 1
                assert token.encode() not in path.read_bytes(), f"token found in {path}"
    assert scanned > 20


def test_cli_push(hub, tmp_path, capsys):
    import datasets

    from hf_unlearnable import cli, evaluate

    ds = build_dataset(n=16)
    t = protect(method="random", seed=3, epsilon=4 / 255)
    protected = ds.map(t, batched=True)
    protected.save_to_disk(str(tmp_path / "prot"))
    ds.save_to_disk(str(tmp_path / "orig"))
    report = evaluate(protected, build_dataset(n=10, seed=2), epochs=1, progress=False)
    (tmp_path / "report.json").write_text(report.to_json())
    repo_id = hub.repo_id("cli")
    rc = cli.main(["push", "--protected", str(tmp_path / "prot"), "--original", str(tmp_path / "orig"),
                   "--method", "random", "--epsilon", "4/255", "--seed", "3", "--report", str(tmp_path / "report.json"),
                   "--repo-id", repo_id, "--license", "cc-by-4.0", "-q"])
    assert rc == 0 and f"{repo_id} config random-eps4 split train @ main" in capsys.readouterr().out
    back = datasets.load_dataset(repo_id, "random-eps4", split="train")
    assert [c["bytes"] for c in stored_cells(back)] == [c["bytes"] for c in stored_cells(protected)]
    card = Path(hub.api().hf_hub_download(repo_id, "README.md", repo_type="dataset")).read_text()
    assert "license: cc-by-4.0" in card and f"{100 * report.accuracy('protected', 1.0):.2f} %" in card
    # bad input: exit 2 with a message, nothing pushed
    rc = cli.main(["push", "--protected", str(tmp_path / "prot"), "--method", "random", "--repo-id", repo_id + "-x"])
    assert rc == 2 and "--method needs --epsilon" in capsys.readouterr().err
    assert not hub.api().repo_exists(repo_id + "-x", repo_type="dataset")
