"""Shared fixtures: tiny in-memory / on-disk image datasets, the bundled CIFAR-10 slice, fast method options,
and the list of "protection cases" (every registered method x every way of applying it) that the invariant
suite in test_transform.py runs over.

The datasets cache and the Hub home point at a temporary directory for the whole session, and the Hub is the
project's loopback server (tests/hub_server.py): no test reads or writes the user's ~/.cache, and no test can
connect anywhere but 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Before anything imports `datasets` (it reads these at import time).
_SESSION_TMP = Path(tempfile.mkdtemp(prefix="hf_unlearnable-tests-"))
os.environ["HF_DATASETS_CACHE"] = str(_SESSION_TMP / "datasets-cache")
os.environ["HF_HOME"] = str(_SESSION_TMP / "hf-home")
# The Hub is the project's own loopback server (tests/hub_server.py), started here, before anything imports
# huggingface_hub or datasets: both freeze HF_ENDPOINT at import. The clients are real and online, but every Hub
# call lands on 127.0.0.1, and _guard_network() below refuses any connection that is not loopback.
from tests import hub_server as _hub_server  # noqa: E402  (standard library only)

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_TOKEN_PATH", "HUGGING_FACE_HUB_TOKEN"):
    os.environ.pop(_var, None)
HUB_TOKENS = {  # user -> token; random per session so the token-leak scan cannot match by accident
    "alice": f"hf_alice_write_{os.urandom(8).hex()}",
    "alice-read": f"hf_alice_read_{os.urandom(8).hex()}",
    "bob": f"hf_bob_write_{os.urandom(8).hex()}",
}
HUB_SERVER = _hub_server.make_server(
    "127.0.0.1", 0, _SESSION_TMP / "hub-data",
    {HUB_TOKENS["alice"]: ("alice", "write"), HUB_TOKENS["alice-read"]: ("alice", "read"),
     HUB_TOKENS["bob"]: ("bob", "write")},
    log_path=_SESSION_TMP / "hub-requests.log")
_hub_server.start_in_thread(HUB_SERVER)
os.environ["HF_ENDPOINT"] = HUB_SERVER.url
os.environ["HF_HUB_DISABLE_XET"] = "1"          # the server speaks git-LFS, not Xet (hub-server.md §6.1)
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_TOKEN"] = HUB_TOKENS["alice"]    # the "logged-in" user; tests pass token=False for anonymous calls
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Idle OpenMP threads sleep instead of spinning: on a busy, shared 2-core machine spinning threads starve the one
# doing the work and small torch calls get 10-30x slower (measured). Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import pytest  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
N_ROWS = 40  # 4 per class

# Options that make `craft(ds, name, ...)` quick on tiny data. A method not listed here is crafted with its
# defaults: add it here when that is slow.
FAST_OPTIONS: dict[str, dict] = {
    "em": dict(max_iters=1, min_iters=1, steps=2, train_steps=2, batch_size=64, surrogate_width=8),
    # turn_on_robust=0: the robust (weight-noise) steps run from the first round, so they are exercised too
    "pue": dict(max_iters=1, min_iters=1, steps=1, train_steps=2, batch_size=64, surrogate_width=8, avgtimes=1,
                avgtimes_perturb=1, robust_noise=0.1, robust_noise_step=0.05, turn_on_robust=0),
    # two passes with a refresh in between, so the surrogate-refresh path is exercised too
    "bayes": dict(passes=2, subset_size=16, refresh_every=1, surrogate_epochs=1, surrogate_width=8),
    # per-batch methods crafted through the default _craft (the per-batch form on every row)
    "tap": dict(steps=2),
    "rem": dict(max_iters=1, min_iters=1, steps=1, adversarial_steps=1, eot=1, train_steps=2, batch_size=64,
                surrogate_width=8),
}

# Options for the per-batch form `protect(method=name, ...)` on tiny data. Methods whose config has a `surrogate`
# field also get a tiny, randomly initialised surrogate (see `batch_options`), so the suite does not depend on the
# bundled default surrogate (tested on its own in tests/methods/test_em.py).
PER_BATCH_OPTIONS: dict[str, dict] = {
    "em": dict(steps=3),
    "bayes": dict(steps=3),
    "tap": dict(steps=2),
    "rem": dict(steps=1, adversarial_steps=1, eot=1),
}

# Crafting modes to cover, for methods that have a `mode` option.
CRAFT_MODES: dict[str, list[str]] = {
    "em": ["classwise", "samplewise"],
}

# Per-batch methods whose output legitimately depends on how rows are grouped into batches (the design allows
# "batch-coupled" methods: bytes then depend on the batch partition, not only on row ids). Every other per-batch
# method must give the same bytes for any batch_size and num_proc.
BATCH_COUPLED: dict[str, str] = {
    "bayes": "the Bayes-error estimate couples the rows of a batch (documented; deterministic per partition)",
}


def pytest_sessionfinish(session, exitstatus):
    HUB_SERVER.shutdown()
    HUB_SERVER.server_close()
    shutil.rmtree(_SESSION_TMP, ignore_errors=True)


def _guard_network() -> None:
    """Refuse every socket connection that is not loopback or a Unix socket: no test can reach the internet."""
    import socket

    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def allowed(sock, address) -> bool:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return True
        host = address[0] if isinstance(address, tuple) else address
        return host in ("127.0.0.1", "::1", "localhost") or str(host).startswith("127.")

    def connect(sock, address):
        if not allowed(sock, address):
            raise ConnectionRefusedError(f"tests may only connect to loopback, not {address!r} (tests/conftest.py)")
        return real_connect(sock, address)

    def connect_ex(sock, address):
        if not allowed(sock, address):
            raise ConnectionRefusedError(f"tests may only connect to loopback, not {address!r} (tests/conftest.py)")
        return real_connect_ex(sock, address)

    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex


_guard_network()


@pytest.fixture(scope="session")
def hub():
    """The loopback Hub: `hub.url`, `hub.tokens` (alice / alice-read / bob), `hub.api(user)`, `hub.log_path`."""
    return _Hub()


class _Hub:
    url = HUB_SERVER.url
    tokens = HUB_TOKENS
    server = HUB_SERVER
    log_path = _SESSION_TMP / "hub-requests.log"
    data_dir = _SESSION_TMP / "hub-data"
    session_dir = _SESSION_TMP

    def api(self, user: str | None = "alice"):
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.url, token=self.tokens[user] if user else False)

    def repo_id(self, name: str, user: str = "alice") -> str:
        """A fresh repo id for this session (tests share one server)."""
        return f"{user.split('-')[0]}/{name}-{os.urandom(4).hex()}"


# ---------------------------------------------------------------------------------------------------------------
# Protection cases: every registered method, per batch (when it has that form) and through craft() + noise.
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    method: str
    form: str                 # "per-batch" | "craft"
    mode: str | None = None   # craft(..., mode=...) for methods that have modes

    @property
    def id(self) -> str:
        return f"{self.method}-{self.form}" + (f"-{self.mode}" if self.mode else "")


def protection_cases() -> list[Case]:
    from hf_unlearnable.methods import METHODS

    cases = []
    for name, cls in sorted(METHODS.items()):
        if cls.per_batch:
            cases.append(Case(name, "per-batch"))
        if cls.norm != "linf":        # L2 / L0 methods are drawn per batch; craft() refuses them
            continue
        for mode in CRAFT_MODES.get(name, [None]):
            cases.append(Case(name, "craft", mode))
    return cases


def case_budget(case: Case, epsilon: float) -> float:
    """The suite's L-inf epsilon in the case's own norm: 8/255 is each method's default budget (L2 1.0, L0 1 pixel)
    and smaller epsilons the same share of it."""
    from hf_unlearnable.methods import METHODS

    norm = METHODS[case.method].norm
    if norm == "linf":
        return epsilon
    share = epsilon * 255 / 8
    return share * 1.0 if norm == "l2" else max(1, round(share))


def within_budget(case: Case, before: np.ndarray, after: np.ndarray, epsilon: float = 8 / 255) -> tuple[bool, str]:
    """Whether a stored image keeps the case's budget (its norm, at its own size), and what was measured."""
    from hf_unlearnable import _norms
    from hf_unlearnable.methods import METHODS

    norm = METHODS[case.method].norm
    c = 1 if before.shape[2] in (1, 2) else 3
    diff = after[..., :c].astype(np.int16) - before[..., :c].astype(np.int16)
    size, limit = _norms.measure(norm, diff), _norms.budget(norm, case_budget(case, epsilon), before.shape)
    return size <= limit + 1e-6, f"{norm} {size:.2f} against {limit:.2f}"


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        cases = protection_cases()
        if "per_batch_only" in metafunc.fixturenames:
            cases = [c for c in cases if c.form == "per-batch"]
        metafunc.parametrize("case", cases, ids=[c.id for c in cases])


@pytest.fixture
def per_batch_only():
    """Marker fixture: restricts the `case` parametrisation to per-batch forms."""
    return True


@pytest.fixture(scope="session")
def tiny_surrogate_dir(tmp_path_factory) -> str:
    """A small, randomly initialised 10-class ConvNet saved as config.json + model.safetensors."""
    import torch

    from hf_unlearnable.surrogates import Surrogate, SurrogateConfig

    torch.manual_seed(0)
    sur = Surrogate(SurrogateConfig(arch="convnet", width=8, num_classes=10, class_names=CLASS_NAMES))
    path = tmp_path_factory.mktemp("surrogate") / "tiny"
    sur.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_vit_dir(tmp_path_factory):
    """A tiny transformers ViT image classifier (random weights) saved as config.json + model.safetensors."""
    import json

    import torch
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    cfg = ViTConfig(image_size=16, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=1,
                    num_attention_heads=2, intermediate_size=64, num_labels=10,
                    id2label=dict(enumerate(CLASS_NAMES)), label2id={n: i for i, n in enumerate(CLASS_NAMES)})
    path = tmp_path_factory.mktemp("vit") / "tiny-vit"
    ViTForImageClassification(cfg).eval().save_pretrained(path)
    (path / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.25] * 3}))
    return path


@pytest.fixture(scope="session")
def batch_options(tiny_surrogate_dir):
    """name -> options for protect(method=name, ...) that are fast on tiny data."""
    from hf_unlearnable.methods import METHODS

    def options(name: str) -> dict:
        opts = dict(PER_BATCH_OPTIONS.get(name, {}))
        if "surrogate" in METHODS[name].config_class.__dataclass_fields__:
            opts.setdefault("surrogate", tiny_surrogate_dir)
        return opts

    return options


def craft_options(case: Case) -> dict:
    opts = dict(FAST_OPTIONS.get(case.method, {}))
    if case.mode is not None:
        opts["mode"] = case.mode
    return opts


_NOISE_CACHE: dict = {}


def protect_with(case: Case, ds, *, epsilon: float = 8 / 255, seed: int = 0, batch_size: int = 16,
                 num_proc: int | None = None, batch_options=None, fresh: bool = False):
    """Apply one protection case to `ds` with Dataset.map; crafted noise is reused unless `fresh`."""
    from hf_unlearnable import craft, protect

    if case.form == "per-batch":
        transform = protect(method=case.method, epsilon=case_budget(case, epsilon), seed=seed,
                            **batch_options(case.method))
    else:
        key = (case, epsilon, seed, ds._fingerprint)
        noise = None if fresh else _NOISE_CACHE.get(key)
        if noise is None:
            noise = craft(ds, case.method, epsilon=epsilon, seed=seed, **craft_options(case))
            if not fresh:
                _NOISE_CACHE[key] = noise
        transform = protect(noise=noise)
    with deadline(180 if num_proc else None, f"map(num_proc={num_proc})"):
        return ds.map(transform, batched=True, batch_size=batch_size, num_proc=num_proc, with_indices=True,
                      load_from_cache_file=False)


@contextlib.contextmanager
def deadline(seconds: int | None, what: str):
    """Turn a hang (e.g. a deadlocked map(num_proc=...) worker) into a test failure after `seconds`."""
    if not seconds or not hasattr(signal, "SIGALRM"):
        yield
        return

    def on_alarm(signum, frame):
        raise TimeoutError(f"{what} did not finish within {seconds} s: hung?")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------------------------------------------------------
# Tiny datasets
# ---------------------------------------------------------------------------------------------------------------
def png_cell(arr: np.ndarray, mode: str | None = None) -> dict:
    buf = io.BytesIO()
    PIL.Image.fromarray(arr, mode=mode).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def tiny_images(n: int = N_ROWS, seed: int = 0, size: int = 32) -> list[np.ndarray]:
    """Distinct uint8 HxWx3 images: random texture, with saturated (0 and 255) bands so clipping is exercised."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        if i % 3 == 0:
            img[: size // 4] = 0
        elif i % 3 == 1:
            img[: size // 4] = 255
        out.append(img)
    return out


def build_dataset(images=None, labels=None, *, n: int = N_ROWS, seed: int = 0, image_column: str = "img",
                  label_column: str | None = "label", extra_columns: bool = True, label_feature=None):
    """A datasets.Dataset with an Image column, a ClassLabel column and two extra columns."""
    from datasets import ClassLabel, Dataset, Features, Image, Value

    if images is None:
        images = tiny_images(n, seed)
    n = len(images)
    cells = [img if isinstance(img, dict) else png_cell(img) for img in images]
    data = {image_column: cells}
    feats = {image_column: Image()}
    if label_column is not None:
        data[label_column] = list(labels) if labels is not None else [i % 10 for i in range(n)]
        feats[label_column] = label_feature if label_feature is not None else ClassLabel(names=CLASS_NAMES)
    if extra_columns:
        data["caption"] = [f"a photo, row {i}" for i in range(n)]
        data["extra"] = [1000 - 7 * i for i in range(n)]
        feats["caption"] = Value("string")
        feats["extra"] = Value("int64")
    return Dataset.from_dict(data, features=Features(feats))


@pytest.fixture
def tiny_ds():
    """40 rows (4 per class) of distinct 32x32 RGB PNG images + label (ClassLabel) + caption + extra, in memory."""
    return build_dataset()


@pytest.fixture
def make_ds():
    """Factory for custom tiny datasets: make_ds(images=..., labels=..., label_column=..., ...)."""
    return build_dataset


@pytest.fixture
def disk_ds(tmp_path):
    """The tiny dataset saved with save_to_disk and loaded back (memory-mapped; map() writes cache files)."""
    import datasets

    path = tmp_path / "tiny_on_disk"
    build_dataset().save_to_disk(str(path))
    return datasets.load_from_disk(str(path))


@pytest.fixture(scope="session")
def cifar_slice():
    """200 rows of the bundled pixel-exact CIFAR-10 slice (20 per class), in its Hub schema (img, label)."""
    from hf_unlearnable.data import load_cifar10

    train = load_cifar10("train")
    labels = np.asarray(train["label"])
    idx = np.sort(np.concatenate([np.flatnonzero(labels == k)[:20] for k in range(10)]))
    return train.select(idx).flatten_indices()


# ---------------------------------------------------------------------------------------------------------------
# Reading what a dataset really stores
# ---------------------------------------------------------------------------------------------------------------
def stored_cells(ds, column: str = "img") -> list[dict]:
    """The raw {'bytes', 'path'} cells of an Image column, in row order (no decoding by datasets)."""
    from datasets import Image

    return ds.cast_column(column, Image(decode=False))[column]


def decode_bytes(data: bytes) -> np.ndarray:
    img = PIL.Image.open(io.BytesIO(data))
    img.load()
    assert img.mode == "RGB", img.mode
    return np.asarray(img)


def stored_arrays(ds, column: str = "img") -> list[np.ndarray]:
    return [decode_bytes(c["bytes"]) for c in stored_cells(ds, column)]


def stored_digest(ds, column: str = "img") -> str:
    h = hashlib.sha256()
    for c in stored_cells(ds, column):
        h.update(c["bytes"])
    return h.hexdigest()
