"""Any-image-dataset benchmark (issue "Any image dataset"): protection and victims on real-looking data of mixed
sizes, loaded the way users load their own photos (`datasets.load_dataset("imagefolder", ...)`).

Data (built once, cached under <state-dir>/data unless --rebuild): class-balanced CIFAR-10 rows (--train-rows from
the train split, --test-rows from the test split; default ../shared/data/cifar10, or `bundled`), each upscaled with
PIL bicubic to a random width x height, each drawn independently in [48, 256] (seeded), saved as JPEG q90 in an
image folder `<root>/<split>/<class name>/<index>.jpg`, and loaded with
`load_dataset("imagefolder", data_dir=<root>, split=...)` (columns `image`, `label` ClassLabel).

Rows: clean; random (per batch); EM class-wise and sample-wise (`craft`, then `protect(noise=)`); bayes (`craft`);
label-agnostic EM (class-wise EM crafted and applied without the label column, `clusters=10`; the victims train with
the true labels); ar per batch, with the labels and with the bundled surrogate's predicted classes instead. Each
crafting row runs in its own fresh process (its peak RSS is its own); images/s counts rows over craft + apply
seconds. Victims: `evaluate(protected, test, resolution=R, epochs=E, seed=S)` for each R in
--resolutions. Memory of protecting 12-megapixel photos: six 4240x2832 JPEGs through
`ds.map(protect(method="em"), batched=True)` in a fresh process, beside the peak RSS of just decoding them.

Downloaded noise on your own data (the issue's item 10): a class-wise EM bank, `craft(bank, "em",
mode="classwise")` with the library's defaults, crafted once on --bank-per-class (default 500) native 32x32 CIFAR-10
train rows per class that the benchmark does not use (`per_class_rows(labels, n, n + 500)`, n = the benchmark's rows
per class), saved with Noise.save_pretrained as <state-dir>/noise/bank, is applied to the benchmark's data under a
seeded permutation of the classes with no fixed point (`class_map` {class name: bank class}), with
`ds.map(protect(noise=bank, class_map=...), batched=True)`: row bank-permuted on the mixed-size image folder (victims
at --resolutions), row bank-permuted-native on the same source rows at their native 32x32 (the `img` column of
`load_cifar10`; victim at 32 against the native test rows), beside clean-native (victim at 32 on the native rows).
Their images/s count the apply step only; the bank's crafting (seconds, images/s, peak RSS) is reported once.

Everything is resumable: results are cached per row (and per victim) in <state-dir>/state/*.json, crafted noise in
<state-dir>/noise/<row> (Noise.save_pretrained) and protected sets in <state-dir>/protected/<row>; a rerun skips
finished work (--redo ROW ... forgets some; --redo bank also forgets the bank rows). Writes <out-dir>/anydata.json,
anydata.md and anydata.png.

    python benchmarks/anydata.py                                    # full run (hours on 2 CPU cores)
    python benchmarks/anydata.py --data bundled --train-rows 40 --test-rows 20 --epochs 1 --only clean random \\
        --resolutions 32 --skip-12mp --out-dir /tmp/anydata --state-dir /tmp/anydata-runs     # smoke run
    python benchmarks/anydata.py --only em-classwise --option em.max_iters=2    # method options (recorded)
    python benchmarks/anydata.py --only bank-permuted clean-native bank-permuted-native   # item 10: a bank, your data
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10"
TAG = "anydata"
SIZE_RANGE = (48, 256)          # width and height, each drawn independently, inclusive
JPEG_QUALITY = 90
PHOTO_SIZE = (4240, 2832)       # (width, height): 12.0 MP
PHOTO_COUNT = 6
RSS_BAR_BYTES = 3.5e9           # the bar for protecting the 12 MP photos

# name -> (method, how, options). how: "none" (clean), "per-batch" (map protect(method=)), "craft" (craft, then
# protect(noise=)), "craft-unlabelled" (craft and apply without the label column; labels added back for victims),
# "per-batch-unlabelled" (per batch with the surrogate's predicted classes as labels; true labels added back),
# "none-native" (the folder's source rows at their native 32x32), "bank" / "bank-native" (the downloaded class-wise
# bank applied under the permuted class_map to the image folder / to the native rows; their options are the bank's).
ROWS: dict[str, tuple[str | None, str, dict]] = {
    "clean": (None, "none", {}),
    "random": ("random", "per-batch", {}),
    "em-classwise": ("em", "craft", {"mode": "classwise"}),
    "em-samplewise": ("em", "craft", {"mode": "samplewise"}),
    "bayes": ("bayes", "craft", {}),
    "em-label-agnostic": ("em", "craft-unlabelled", {"mode": "classwise", "clusters": 10}),
    "ar": ("ar", "per-batch", {}),
    "ar-label-agnostic": ("ar", "per-batch-unlabelled", {}),
    "bank-permuted": ("em", "bank", {}),
    "clean-native": (None, "none-native", {}),
    "bank-permuted-native": ("em", "bank-native", {}),
}
DESCRIPTIONS = {
    "clean": "the image folder as loaded, unprotected.",
    "random": "`ds.map(protect(method=\"random\"), batched=True)`: uniform noise in epsilon, per batch.",
    "em-classwise": "`craft(ds, \"em\", mode=\"classwise\")` on the image folder, then `protect(noise=)`.",
    "em-samplewise": "`craft(ds, \"em\", mode=\"samplewise\")` on the image folder, then `protect(noise=)`.",
    "bayes": "`craft(ds, \"bayes\")` on the image folder, then `protect(noise=)`.",
    "em-label-agnostic": "class-wise EM crafted and applied without the label column (`clusters=10`); the victims "
                         "train with the true labels.",
    "ar": "`ds.map(protect(method=\"ar\"), batched=True)`: autoregressive noise per class, L2 1.0 per 32x32 "
          "(scaled with the area), per batch.",
    "ar-label-agnostic": "the same with the bundled surrogate's predicted class of each image in place of its label "
                         "(what per-batch em does without labels; the library refuses ar without labels because of "
                         "this row); the victims train with the true labels.",
    "bank-permuted": "a downloaded class-wise EM bank (crafted on other CIFAR-10 rows, below) applied to the image "
                     "folder with `protect(noise=bank, class_map=...)` under the permuted class map.",
    "clean-native": "the image folder's source rows at their native 32x32 (`load_cifar10`), unprotected; victim at "
                    "32 against the native test rows.",
    "bank-permuted-native": "the same bank and class map applied to those native 32x32 rows; victim at 32 against "
                            "the native test rows (compare with clean-native).",
}
BANK_METHOD, BANK_OPTIONS = "em", {"mode": "classwise"}     # craft(bank, "em", mode="classwise"): library defaults
BANK_HOWS = ("bank", "bank-native")
NATIVE_HOWS = ("none-native", "bank-native")
NATIVE_RESOLUTION = 32
FIGURE_ROWS = ["em-classwise", "em-samplewise"]
CLEAN_REMINDER = "no victim trained on clean data"


def log(msg: str) -> None:
    print(f"[anydata {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _key(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def _write_json(path: Path, obj) -> None:
    """Atomic: a reader (or an interrupted run) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _source(data: str) -> str:
    return data if data in ("bundled", "hub") else str(Path(os.path.expanduser(data)).resolve())


# ---------------------------------------------------------------------------------------------------------------
# The data: CIFAR-10 rows upscaled to random sizes, as an image folder
# ---------------------------------------------------------------------------------------------------------------
def data_config(data: str, train_rows: int, test_rows: int, seed: int) -> dict:
    return {"source": _source(data), "train_rows": train_rows, "test_rows": test_rows, "seed": seed,
            "size_range": list(SIZE_RANGE), "resample": "bicubic", "jpeg_quality": JPEG_QUALITY}


def _balanced(ds, rows: int, split: str):
    from hf_unlearnable.data import per_class_rows

    names = ds.features["label"].names
    per_class = rows // len(names)
    if per_class < 1:
        raise SystemExit(f"--{split}-rows {rows}: need at least one row per class ({len(names)} classes).")
    keep = per_class_rows(ds["label"], 0, per_class)
    if len(keep) < per_class * len(names):
        raise SystemExit(f"the {split} split has fewer than {per_class} rows in some class; ask for fewer rows.")
    return keep


def build_data(root: Path, data: str, train_rows: int, test_rows: int, seed: int, rebuild: bool = False) -> dict:
    """Write (or reuse) the image folder; returns its manifest (config, key, size statistics)."""
    import PIL.Image
    from tqdm.auto import tqdm

    from hf_unlearnable.data import load_cifar10

    cfg = data_config(data, train_rows, test_rows, seed)
    manifest_path = root / "manifest.json"
    manifest = _read_json(manifest_path)
    if manifest and manifest.get("config") == cfg and not rebuild:
        log(f"data: reusing {root} ({manifest['splits']['train']['rows']} train / "
            f"{manifest['splits']['test']['rows']} test images, key {manifest['key']})")
        return manifest
    if root.exists():
        log(f"data: {'--rebuild' if rebuild else 'another configuration or an unfinished build'}: rebuilding {root}")
        shutil.rmtree(root)
    splits = {}
    for split_no, (split, rows) in enumerate((("train", train_rows), ("test", test_rows))):
        src = load_cifar10(split, data)
        names = src.features["label"].names
        keep = _balanced(src, rows, split)
        sub = src.select(keep)
        sizes = np.random.default_rng([seed, split_no]).integers(SIZE_RANGE[0], SIZE_RANGE[1] + 1, size=(len(keep), 2))
        for name in names:
            (root / split / name).mkdir(parents=True, exist_ok=True)
        total_bytes = 0
        for i, row in enumerate(tqdm(sub, total=len(sub), desc=f"build {split} images", mininterval=2)):
            w, h = (int(v) for v in sizes[i])
            img = row["img"].convert("RGB").resize((w, h), PIL.Image.BICUBIC)
            path = root / split / names[row["label"]] / f"{int(keep[i]):05d}.jpg"
            img.save(path, format="JPEG", quality=JPEG_QUALITY)
            total_bytes += path.stat().st_size
        px = sizes[:, 0] * sizes[:, 1]
        splits[split] = {"rows": len(keep), "per_class": len(keep) // len(names), "class_names": names,
                         "width": _stats(sizes[:, 0]), "height": _stats(sizes[:, 1]), "pixels": _stats(px),
                         "distinct_sizes": len({(int(a), int(b)) for a, b in sizes}),
                         "jpeg_bytes": int(total_bytes), "source_rows": "first rows of each class, in split order"}
        log(f"data: wrote {len(keep)} {split} images ({total_bytes / 2**20:.1f} MiB)")
    manifest = {"config": cfg, "key": _key(cfg), "root": str(root), "splits": splits,
                "layout": "<root>/<split>/<class name>/<source index>.jpg",
                "built": time.strftime("%Y-%m-%d %H:%M:%S")}
    _write_json(manifest_path, manifest)     # written last: marks the build complete
    return manifest


def _stats(v) -> dict:
    v = np.asarray(v)
    return {"min": int(v.min()), "median": float(np.median(v)), "mean": round(float(v.mean()), 1), "max": int(v.max())}


def load_images(root: Path | str, split: str):
    """The image folder as users load theirs: `image` (Image) + `label` (ClassLabel from the folder names)."""
    import datasets

    return datasets.load_dataset("imagefolder", data_dir=str(root), split=split)


def native_config(data: str, train_rows: int, test_rows: int) -> dict:
    """The image folder's source rows at their native 32x32: the same per_class_rows selection `build_data` made."""
    return {"source": _source(data), "column": "img", "size": [32, 32],
            "train": {"split": "train", "rows": train_rows, "per_class_rows": [0, train_rows // 10]},
            "test": {"split": "test", "rows": test_rows, "per_class_rows": [0, test_rows // 10]}}


def load_native(data: str, split: str, rows: int):
    """CIFAR-10 `split` rows `per_class_rows(labels, 0, rows // classes)` at 32x32 (`img` + `label` ClassLabel): the
    rows the image folder's <split> images were made from (same selection, same order)."""
    from hf_unlearnable.data import load_cifar10

    src = load_cifar10(split, data)
    return src.select(_balanced(src, rows, split))


def derangement_class_map(names: list[str], seed: int) -> dict[str, int]:
    """{class name: bank class index}: a seeded permutation of the classes with no fixed point (no class keeps its
    own pattern), so the bank's patterns land on other classes than they were crafted for."""
    if len(names) < 2:
        raise SystemExit("the bank rows need at least two classes (a permutation without a fixed point).")
    rng = np.random.default_rng([seed, 10])
    while True:
        perm = rng.permutation(len(names))
        if not np.any(perm == np.arange(len(names))):
            return {name: int(k) for name, k in zip(names, perm)}


# ---------------------------------------------------------------------------------------------------------------
# Crafting jobs, each in a fresh process
# ---------------------------------------------------------------------------------------------------------------
def _peak_rss_bytes() -> int:
    """This process's own peak RSS: VmHWM of /proc/self/status (reset by exec). ru_maxrss is not: Linux carries the
    parent's RSS at fork over into a spawned child, so every job would report at least the parent's size."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024      # elsewhere: KiB, an upper bound


def _craft_job(job: dict) -> dict:
    """In a fresh process: protect the train images one row's way, save noise and protected set, time it, peak RSS."""
    from hf_unlearnable import craft, load_noise, protect

    ds = load_images(job["data_root"], "train")
    method, how, options, seed = job["method"], job["how"], job["options"], job["seed"]
    rss_before = _peak_rss_bytes()
    noise_dir, ckpt = Path(job["noise_dir"]), Path(job["ckpt_dir"])
    resumed = False
    t0 = time.perf_counter()
    if how in ("per-batch", "per-batch-unlabelled"):
        label_column = "label"
        if how == "per-batch-unlabelled":    # the surrogate's guess in place of the labels (the library refuses ar
            src = ds.remove_columns("label").add_column("guessed", predicted_classes(ds))   # without labels)
            label_column = "guessed"
        else:
            src = ds
        protected = src.map(protect(method=method, seed=seed, label_column=label_column, **options), batched=True,
                            with_indices=True, load_from_cache_file=False, desc=f"{job['name']} (per batch)")
        if how == "per-batch-unlabelled":
            protected = protected.remove_columns("guessed")
        craft_seconds, noise_stats = 0.0, {}
    else:
        src = ds.remove_columns("label") if how == "craft-unlabelled" else ds
        sidecar = noise_dir.with_name(noise_dir.name + ".job.json")
        ident = {"identity": job["identity"]}
        if (noise_dir / "config.json").exists() and _read_json(sidecar) == ident:
            log(f"{job['name']}: reusing crafted noise {noise_dir}")
            noise, resumed = load_noise(str(noise_dir)), True
        else:
            ck_sidecar = ckpt.with_name(ckpt.name + ".job.json")
            if ckpt.exists() and _read_json(ck_sidecar) != ident:
                shutil.rmtree(ckpt)       # another configuration's checkpoint
            resumed = ckpt.exists() and any(ckpt.iterdir())
            _write_json(ck_sidecar, ident)
            noise = craft(src, method, seed=seed, checkpoint_dir=str(ckpt), **options)
            noise.save_pretrained(str(noise_dir))
            _write_json(sidecar, ident)
            shutil.rmtree(ckpt, ignore_errors=True)      # the saved noise supersedes the checkpoint
        craft_seconds = time.perf_counter() - t0
        noise_stats = {k: v for k, v in (getattr(noise.config, "stats", None) or {}).items() if k != "history"}
        protected = src.map(protect(noise=noise), batched=True, with_indices=True, load_from_cache_file=False,
                            desc=f"apply {job['name']}")
    if how in ("craft-unlabelled", "per-batch-unlabelled"):   # the victims train with the true labels
        protected = protected.add_column("label", ds["label"]).cast_column("label", ds.features["label"])
    total = time.perf_counter() - t0
    _save_protected(protected, Path(job["protected_dir"]))
    peak = _peak_rss_bytes()
    return {"rows": len(ds), "craft_seconds": round(craft_seconds, 1), "total_seconds": round(total, 1),
            "images_per_second": None if resumed else round(len(ds) / total, 2), "resumed": resumed,
            "peak_rss_mib": round(peak / 2**20, 1), "rss_before_crafting_mib": round(rss_before / 2**20, 1),
            "noise_stats": _jsonable(noise_stats)}


def predicted_classes(ds, batch: int = 500) -> list[int]:
    """The bundled surrogate's predicted class of every image, read at 32x32 (as per-batch em takes its classes)."""
    from hf_unlearnable._clusters import predicted_classes as predict
    from hf_unlearnable._images import DEFAULT_RESOLUTION, to_tensor, working_rgb
    from hf_unlearnable.surrogates import load_surrogate

    model, size, out = load_surrogate(None).eval(), (DEFAULT_RESOLUTION, DEFAULT_RESOLUTION), []
    for s in range(0, len(ds), batch):
        small = np.stack([working_rgb(np.asarray(im.convert("RGB")), size) for im in ds[s:s + batch]["image"]])
        out += predict(model, to_tensor(small)).tolist()
    return out


def _save_protected(protected, out: Path) -> None:
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    protected.save_to_disk(str(tmp))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def _bank_job(job: dict) -> dict:
    """In a fresh process: craft the class-wise bank on native CIFAR-10 train rows disjoint from the benchmark's and
    save it (Noise.save_pretrained); time it, peak RSS. A saved bank of the same identity is reused."""
    from hf_unlearnable import craft, load_noise
    from hf_unlearnable.data import load_cifar10, per_class_rows

    src = load_cifar10("train", job["data"])
    names = src.features["label"].names
    start, stop = job["per_class_rows"]
    labels = np.asarray(src["label"])
    keep = per_class_rows(labels, start, stop)
    counts = np.bincount(labels[keep], minlength=len(names))
    if counts.min() < stop - start:
        raise RuntimeError(f"the bank needs rows {start}..{stop - 1} of every class, but the train split has only "
                           f"{start + int(counts.min())} rows in some class: lower --bank-per-class.")
    ds = src.select(keep)
    rss_before = _peak_rss_bytes()
    noise_dir, ckpt = Path(job["noise_dir"]), Path(job["ckpt_dir"])
    sidecar = noise_dir.with_name(noise_dir.name + ".job.json")
    ident = {"identity": job["identity"]}
    t0 = time.perf_counter()
    if (noise_dir / "config.json").exists() and _read_json(sidecar) == ident:
        log(f"bank: reusing crafted noise {noise_dir}")
        noise, resumed = load_noise(str(noise_dir)), True
    else:
        ck_sidecar = ckpt.with_name(ckpt.name + ".job.json")
        if ckpt.exists() and _read_json(ck_sidecar) != ident:
            shutil.rmtree(ckpt)
        resumed = ckpt.exists() and any(ckpt.iterdir())
        _write_json(ck_sidecar, ident)
        noise = craft(ds, job["method"], seed=job["seed"], checkpoint_dir=str(ckpt), **job["options"])
        noise.save_pretrained(str(noise_dir))
        _write_json(sidecar, ident)
        shutil.rmtree(ckpt, ignore_errors=True)
    seconds = time.perf_counter() - t0
    peak = _peak_rss_bytes()
    noise_stats = {k: v for k, v in (getattr(noise.config, "stats", None) or {}).items() if k != "history"}
    return {"rows": len(ds), "per_class": int(stop - start), "split": "train",
            "selection": f"per_class_rows(labels, {start}, {stop})",
            "indices_sha1": hashlib.sha1(np.asarray(keep, dtype=np.int64).tobytes()).hexdigest(),
            "first_index": int(keep[0]), "last_index": int(keep[-1]),
            "image_size": list(np.asarray(ds[0]["img"]).shape[:2]), "class_names": list(names),
            "noise_resolution": list(getattr(noise, "resolution", None) or []) or None,
            "craft_seconds": round(seconds, 1), "images_per_second": None if resumed else round(len(ds) / seconds, 2),
            "resumed": resumed, "peak_rss_mib": round(peak / 2**20, 1),
            "rss_before_crafting_mib": round(rss_before / 2**20, 1), "noise_stats": _jsonable(noise_stats)}


def _apply_job(job: dict) -> dict:
    """In a fresh process: apply the saved bank to the image folder (how "bank") or to the native 32x32 rows
    ("bank-native") under the explicit class_map; save the protected set; time the apply step, peak RSS."""
    from hf_unlearnable import load_noise, protect

    if job["how"] == "bank":
        ds = load_images(job["data_root"], "train")
    else:
        ds = load_native(job["data"], "train", job["train_rows"])
    bank = load_noise(job["bank_dir"])
    rss_before = _peak_rss_bytes()
    t0 = time.perf_counter()
    protected = ds.map(protect(noise=bank, class_map=job["class_map"]), batched=True, with_indices=True,
                       load_from_cache_file=False, desc=f"apply {job['name']}")
    seconds = time.perf_counter() - t0
    _save_protected(protected, Path(job["protected_dir"]))
    peak = _peak_rss_bytes()
    return {"rows": len(ds), "craft_seconds": 0.0, "apply_seconds": round(seconds, 1),
            "total_seconds": round(seconds, 1), "images_per_second": round(len(ds) / seconds, 2), "resumed": False,
            "peak_rss_mib": round(peak / 2**20, 1), "rss_before_apply_mib": round(rss_before / 2**20, 1)}


def _jsonable(obj):
    try:
        json.dumps(obj)
        return obj
    except TypeError:
        return json.loads(json.dumps(obj, default=str))


def in_fresh_process(fn, arg):
    """fn(arg) in a freshly spawned interpreter: its ru_maxrss is that job's own peak."""
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, (arg,))


# ---------------------------------------------------------------------------------------------------------------
# 12-megapixel photos
# ---------------------------------------------------------------------------------------------------------------
def build_photos(folder: Path, data: str, seed: int) -> Path:
    """Six 4240x2832 JPEG (q90) photos: CIFAR images upscaled bicubic plus mild sensor-like noise, as a Dataset
    (Image + ClassLabel) saved to disk."""
    import io

    import datasets
    import PIL.Image

    from hf_unlearnable.data import load_cifar10

    cfg = {"source": _source(data), "seed": seed, "size": list(PHOTO_SIZE), "count": PHOTO_COUNT,
           "jpeg_quality": JPEG_QUALITY, "noise_sigma": 3.0}
    done = folder / "photos.job.json"
    if (_read_json(done) or {}).get("config") == cfg:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    src = load_cifar10("test", data)
    names = src.features["label"].names
    idx = [int(np.flatnonzero(np.asarray(src["label"]) == k)[0]) for k in range(PHOTO_COUNT)]
    rng = np.random.default_rng([seed, 12])
    cells, labels = [], []
    for i in idx:
        row = src[i]
        big = np.asarray(row["img"].convert("RGB").resize(PHOTO_SIZE, PIL.Image.BICUBIC), dtype=np.int16)
        big += rng.normal(0, cfg["noise_sigma"], big.shape).astype(np.int16)
        buf = io.BytesIO()
        PIL.Image.fromarray(np.clip(big, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=JPEG_QUALITY)
        del big
        cells.append({"bytes": buf.getvalue(), "path": None})
        labels.append(row["label"])
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    datasets.Dataset.from_dict({"image": cells, "label": labels}, features=feats).save_to_disk(str(folder / "ds"))
    _write_json(done, {"config": cfg, "jpeg_bytes": [len(c["bytes"]) for c in cells]})
    return folder


def _photos_job(job: dict) -> dict:
    """In a fresh process: decode the six photos (the floor), or protect them with protect(method="em")."""
    import datasets

    import hf_unlearnable  # noqa: F401  (same imports in both jobs: the floor includes the library's import cost)
    from hf_unlearnable import protect

    ds = datasets.load_from_disk(job["ds"])
    after_imports = _peak_rss_bytes()
    t0 = time.perf_counter()
    if job["what"] == "decode":
        arrays = [np.asarray(ds[i]["image"].convert("RGB")) for i in range(len(ds))]   # all six held at once
        shapes = sorted({a.shape for a in arrays})
        n = len(arrays)
        del arrays
    else:
        out = ds.map(protect(method="em"), batched=True, load_from_cache_file=False, desc="protect 12 MP (em)")
        n = len(out)
        shapes = None
        del out
        ds.cleanup_cache_files()      # map's output (the protected PNGs) is not kept
    seconds = time.perf_counter() - t0
    peak = _peak_rss_bytes()
    return {"what": job["what"], "images": n, "seconds": round(seconds, 1), "peak_rss_bytes": peak,
            "peak_rss_mib": round(peak / 2**20, 1), "peak_rss_gb": round(peak / 1e9, 3),
            "rss_after_imports_mib": round(after_imports / 2**20, 1),
            "shapes": [list(s) for s in shapes] if shapes else None}


def run_photos(state: Path, data: str, seed: int, env_key: str, redo: bool) -> dict:
    cache = state / "state" / "12mp.json"
    cached = _read_json(cache)
    if cached and cached.get("env_key") == env_key and not redo:
        log(f"12 MP: cached ({cache})")
        return cached
    folder = build_photos(state / "photos12mp", data, seed)
    log(f"12 MP: {PHOTO_COUNT} photos of {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} in {folder}; decoding (floor) ...")
    result = {"photos": PHOTO_COUNT, "size": list(PHOTO_SIZE), "env_key": env_key,
              "jpeg_bytes": (_read_json(folder / "photos.job.json") or {}).get("jpeg_bytes")}
    try:
        result["decode"] = in_fresh_process(_photos_job, {"ds": str(folder / "ds"), "what": "decode"})
        log(f"12 MP: decode floor {result['decode']['peak_rss_mib']} MiB; protect(method='em') ...")
        result["protect"] = in_fresh_process(_photos_job, {"ds": str(folder / "ds"), "what": "protect"})
        p = result["protect"]
        result["under_bar"] = p["peak_rss_bytes"] < RSS_BAR_BYTES
        log(f"12 MP: protect peak {p['peak_rss_mib']} MiB ({p['peak_rss_gb']} GB) in {p['seconds']} s")
        _write_json(cache, result)
    except Exception as exc:      # recorded, not cached: a rerun tries again
        result["error"] = f"{type(exc).__name__}: {exc}"
        log(f"12 MP FAILED: {result['error']}")
        traceback.print_exc()
    return result


# ---------------------------------------------------------------------------------------------------------------
# Rows and victims
# ---------------------------------------------------------------------------------------------------------------
def parse_options(items: list[str]) -> dict[str, dict]:
    """--option ROW_OR_METHOD.KEY=VALUE -> {row: {key: value}} (VALUE read as JSON where it parses). The bank's
    craft options go under "bank": scope `bank`, a bank row, or the bank's method (`em.max_iters=2` reaches the EM
    rows and the bank)."""
    per_row: dict[str, dict] = {}
    for item in items:
        target, sep, value = item.partition("=")
        scope, dot, key = target.partition(".")
        if not sep or not dot or not key:
            raise SystemExit(f"--option {item!r}: write ROW.KEY=VALUE or METHOD.KEY=VALUE, e.g. em.max_iters=2.")
        rows = [r for r, (m, how, _) in ROWS.items() if how not in BANK_HOWS and (r == scope or m == scope)]
        if scope in ("bank", BANK_METHOD) or ROWS.get(scope, (None, "", {}))[1] in BANK_HOWS:
            rows.append("bank")
        if not rows or ROWS.get(scope, (None, "", {}))[1] in ("none", "none-native"):
            raise SystemExit(f"--option {item!r}: {scope!r} is neither a row ({', '.join(ROWS)}), 'bank', nor a "
                             "method.")
        try:
            v = json.loads(value)
        except ValueError:
            v = value
        for r in rows:
            per_row.setdefault(r, {})[key] = v
    return per_row


def bank_config(args, manifest: dict, extra: dict) -> dict:
    start = manifest["splits"]["train"]["per_class"]          # the benchmark's rows are 0..start-1 of each class
    return {"method": BANK_METHOD, "options": {**BANK_OPTIONS, **extra.get("bank", {})}, "seed": args.seed,
            "source": _source(args.data), "split": "train", "per_class_rows": [start, start + args.bank_per_class]}


def run_bank(args, state: Path, manifest: dict, extra: dict) -> dict:
    """Craft (or reuse) the class-wise bank once, in a fresh process; cached in <state>/state/bank.json."""
    identity = bank_config(args, manifest, extra)
    cache = state / "state" / "bank.json"
    noise_dir = state / "noise" / "bank"
    cached = _read_json(cache)
    if cached and cached.get("identity") == identity and (noise_dir / "config.json").exists():
        log(f"bank: crafting cached ({cache})")
        return cached
    log(f"bank: {BANK_METHOD} {identity['options']} on native CIFAR-10 train rows "
        f"per_class_rows(labels, {identity['per_class_rows'][0]}, {identity['per_class_rows'][1]}) in a fresh "
        "process ...")
    job = {"data": args.data, "method": BANK_METHOD, "options": identity["options"], "seed": args.seed,
           "per_class_rows": identity["per_class_rows"], "identity": identity, "noise_dir": str(noise_dir),
           "ckpt_dir": str(state / "ckpt" / "bank")}
    res = {"identity": identity, "noise_dir": str(noise_dir), **in_fresh_process(_bank_job, job)}
    _write_json(cache, res)
    log(f"bank: {res['rows']} rows in {res['craft_seconds']} s ({res['images_per_second']} images/s), peak RSS "
        f"{res['peak_rss_mib']} MiB")
    return res


def run_row(name: str, args, state: Path, manifest: dict, extra: dict, bank=None, class_map=None) -> dict:
    """bank: a callable giving the bank's record (crafting it on first use), needed by the bank rows."""
    method, how, options = ROWS[name]
    if how in BANK_HOWS:
        options = {**BANK_OPTIONS, **extra.get("bank", {})}
    else:
        options = {**options, **extra.get(name, {})}
    native_key = _key(native_config(args.data, args.train_rows, args.test_rows))
    identity = {"row": name, "method": method, "how": how, "options": options, "seed": args.seed,
                "data_key": native_key if how in NATIVE_HOWS else manifest["key"]}
    rec = {"name": name, "method": method, "how": how, "options": options}
    if how == "none":
        return {**rec, "identity": identity, "rows": manifest["splits"]["train"]["rows"]}
    if how == "none-native":
        return {**rec, "identity": identity, "rows": manifest["splits"]["train"]["rows"], "image_size": [32, 32]}
    if how in BANK_HOWS:
        bank_rec = bank()
        identity["bank"] = bank_rec["identity"]
        identity["class_map"] = class_map
        rec["class_map"] = class_map
    cache = state / "state" / f"craft-{name}.json"
    protected_dir = state / "protected" / name
    cached = _read_json(cache)
    if cached and cached.get("identity") == identity and protected_dir.exists():
        log(f"{name}: crafting cached ({cache})")
        return cached
    if how in BANK_HOWS:
        log(f"{name}: applying the bank under class_map {class_map} in a fresh process ...")
        job = {"name": name, "how": how, "data": args.data, "train_rows": args.train_rows,
               "data_root": manifest["root"], "bank_dir": bank_rec["noise_dir"], "class_map": class_map,
               "protected_dir": str(protected_dir)}
        res = {**rec, "identity": identity, **in_fresh_process(_apply_job, job)}
        _write_json(cache, res)
        log(f"{name}: apply {res['images_per_second']} images/s, peak RSS {res['peak_rss_mib']} MiB")
        return res
    log(f"{name}: {method} {how} {options or ''} in a fresh process ...")
    job = {"name": name, "method": method, "how": how, "options": options, "seed": args.seed, "identity": identity,
           "data_root": manifest["root"], "noise_dir": str(state / "noise" / name),
           "ckpt_dir": str(state / "ckpt" / name), "protected_dir": str(protected_dir)}
    res = {**rec, "identity": identity, **in_fresh_process(_craft_job, job)}
    _write_json(cache, res)
    log(f"{name}: {res['images_per_second']} images/s, peak RSS {res['peak_rss_mib']} MiB")
    return res


def victim_arg(victim: str | None):
    if victim and ":" in victim:
        arch, _, width = victim.partition(":")
        return {"arch": arch, "width": int(width)}
    return victim


def run_victim(name: str, res: int, args, state: Path, identity: dict, clean, test) -> dict:
    import datasets

    from hf_unlearnable import evaluate

    vid = {"craft": identity, "resolution": res, "epochs": args.epochs, "victim": args.victim, "seed": args.seed}
    cache = state / "state" / f"victim-{name}-r{res}.json"
    cached = _read_json(cache)
    if cached and cached.get("identity") == vid:
        log(f"victim {name} @{res}: cached {100 * cached['test_accuracy']:.2f} %")
        cached["warnings"] = [w for w in cached.get("warnings") or [] if not w.startswith(CLEAN_REMINDER)]
        return cached
    if "resolution" not in inspect.signature(evaluate).parameters:
        raise RuntimeError("evaluate() has no resolution= keyword in this version of hf_unlearnable")
    if ROWS[name][1] in ("none", "none-native"):      # clean / test: the image folder's, or the native rows'
        train = clean
    else:
        train = datasets.load_from_disk(str(state / "protected" / name))
    log(f"victim {name} @{res}x{res}: {len(train)} rows, {args.epochs} epochs ...")
    rep = evaluate(train, test, resolution=res, epochs=args.epochs, seed=args.seed, victim=victim_arg(args.victim))
    row = rep.rows[0]
    out = {"identity": vid, "resolution": res, "test_accuracy": row["test_accuracy"],
           "train_accuracy": row.get("train_accuracy"), "seconds": row.get("seconds"), "victim": rep.victim,
           "trained_at": getattr(rep, "resolution", None),
           # the clean victim is its own row here, so evaluate's "pass clean=" reminder is left out
           "warnings": [w for w in getattr(rep, "warnings", None) or [] if not w.startswith(CLEAN_REMINDER)],
           "environment": getattr(rep, "environment", None)}
    _write_json(cache, out)
    log(f"victim {name} @{res}: {100 * out['test_accuracy']:.2f} %")
    return out


# ---------------------------------------------------------------------------------------------------------------
# Environment, outputs
# ---------------------------------------------------------------------------------------------------------------
def environment() -> dict:
    import datasets
    import torch

    import hf_unlearnable

    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {"hf_unlearnable": hf_unlearnable.__version__, "git_commit": commit, "git_dirty": dirty,
            "torch": torch.__version__, "datasets": datasets.__version__, "python": platform.python_version(),
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "machine": platform.machine(),
            "cuda": torch.cuda.is_available()}


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.2f} %"


def to_markdown(r: dict) -> str:
    cfg, data = r["config"], r["data"]
    tr = data["splits"]["train"]
    res = list(cfg["resolutions"])
    res += sorted({int(x) for row in r["rows"] for x in row["victims"]} - set(res))     # the native rows' 32
    lines = [f"# Any-image-dataset benchmark ({r['date']}, hf_unlearnable {r['environment']['hf_unlearnable']}"
             f"{' @ ' + r['environment']['git_commit'] if r['environment'].get('git_commit') else ''}, torch "
             f"{r['environment']['torch']}, {r['environment']['threads']} threads)", "",
             f"Data: {tr['rows']} train ({tr['per_class']} per class) and {data['splits']['test']['rows']} test "
             f"CIFAR-10 images ({data['config']['source']}), each upscaled with PIL bicubic to a random width and "
             f"height drawn independently in [{SIZE_RANGE[0]}, {SIZE_RANGE[1]}] (seed {data['config']['seed']}; "
             f"{tr['distinct_sizes']} distinct sizes among the train images, median {tr['width']['median']:.0f} x "
             f"{tr['height']['median']:.0f}), saved as JPEG q{JPEG_QUALITY} in an image folder "
             "(`<split>/<class>/<index>.jpg`) and loaded with `load_dataset(\"imagefolder\")`. "
             f"Victims: `evaluate(protected, test, resolution=R, epochs={cfg['epochs']}, seed={cfg['seed']})` "
             f"(victim {cfg['victim'] or 'library default'}"
             + (f": {r['victim']['arch']}" if r.get("victim") else "") + "), trained at R x R; epsilon 8/255. "
             "images/s: train rows / (craft + apply) seconds in a fresh process (the bank rows: the apply step "
             "only); peak RSS: that process's.", "",
             "| row | " + " | ".join(f"victim acc @{x}" for x in res) + " | images/s | peak RSS (MiB) |",
             "|---|" + "---|" * len(res) + "---|---|"]
    for row in r["rows"]:
        accs = []
        for x in res:
            v = row["victims"].get(str(x), {})
            if not v and row["how"] in NATIVE_HOWS and x != NATIVE_RESOLUTION:
                accs.append("–")           # the native rows are 32x32: one victim, at 32
                continue
            accs.append(f"failed: {v['error'][:60]}" if "error" in v else _pct(v.get("test_accuracy")))
        if row.get("error"):
            ips, rss = f"failed: {row['error'][:80]}", "–"
        elif row["how"] in ("none", "none-native"):
            ips, rss = "–", "–"
        else:
            ips = "n/a (resumed)" if row.get("images_per_second") is None else f"{row['images_per_second']:.1f}"
            rss = f"{row['peak_rss_mib']:.0f}"
        lines.append(f"| {row['name']} | " + " | ".join(accs) + f" | {ips} | {rss} |")
    lines += ["", "Rows:", *(f"- {row['name']}: {DESCRIPTIONS.get(row['name'], '')}" for row in r["rows"])]
    b = r.get("bank")
    if b:
        lines += [""] + bank_markdown(b)
    notes = [f"{row['name']} @{x}: {w}" for row in r["rows"] for x, v in row["victims"].items()
             for w in v.get("warnings") or []]
    if notes:
        lines += ["", "Warnings from evaluate():", *(f"- {n}" for n in notes)]
    lines.append("")
    p = r.get("photos_12mp")
    if p is None:
        lines.append("12 MP photos: not run (--skip-12mp).")
    elif "error" in p:
        lines.append(f"12 MP photos: failed ({p['error']}).")
    else:
        d, q = p["decode"], p["protect"]
        lines.append(f"12 MP photos: `ds.map(protect(method=\"em\"), batched=True)` on {p['photos']} "
                     f"{p['size'][0]}x{p['size'][1]} JPEGs: peak RSS **{q['peak_rss_mib']:.0f} MiB "
                     f"({q['peak_rss_gb']:.2f} GB)** in {q['seconds']} s "
                     f"({'under' if p['under_bar'] else 'OVER'} the 3.5 GB bar); decoding the six alone "
                     f"(the floor, same imports): {d['peak_rss_mib']:.0f} MiB ({d['peak_rss_gb']:.2f} GB).")
    lines.append("")
    if r.get("figure"):
        lines += [f"![protected images beside their noise]({r['figure']})", "",
                  "Figure: protected images at full size beside their noise ((x' - x) * 255 / 16 + 0.5).", ""]
    return "\n".join(lines)


def bank_markdown(b: dict) -> list[str]:
    cfg = b["config"]
    start, stop = cfg["per_class_rows"]
    names = list(b["class_map"])
    pairs = ", ".join(f"{n} → {b['class_map_names'][n]} ({b['class_map'][n]})" for n in names)
    what = (f"Bank (downloaded noise on your own data): `craft(bank, \"{cfg['method']}\", "
            + ", ".join(f"{k}={v!r}" for k, v in cfg["options"].items()).replace("'", '"')
            + f", seed={cfg['seed']})` on native 32x32 CIFAR-10 {cfg['split']} rows "
            f"`per_class_rows(labels, {start}, {stop})` ({stop - start} per class, disjoint from the benchmark's "
            f"rows 0..{start - 1} of each class), saved with `Noise.save_pretrained`")
    c = b.get("craft") or {}
    if "error" in b:
        what += f": failed ({b['error']})."
    elif c:
        ips = "n/a (resumed)" if c.get("images_per_second") is None else f"{c['images_per_second']:.1f} images/s"
        what += (f"; {c['rows']} rows crafted in {c['craft_seconds']} s ({ips}), peak RSS {c['peak_rss_mib']:.0f} "
                 "MiB (its own fresh process; not counted in the bank rows' images/s).")
    else:
        what += "."
    return [what, "",
            f"Class map (a seeded permutation without a fixed point, `protect(noise=bank, class_map=...)`): {pairs}.",
            ""]


def plot(rows: list[str], state: Path, path: Path, n_images: int = 3) -> bool:
    """Protected images at full size (1:1 pixels) beside their amplified noise, one band per crafted row."""
    import datasets
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if (state / "protected" / r).exists()]
    if not rows:
        return False
    manifest = _read_json(state / "data" / "manifest.json")
    clean = load_images(manifest["root"], "train")
    labels = np.asarray(clean["label"])
    picks = [int(np.flatnonzero(labels == k)[0]) for k in np.unique(labels)[:n_images]]
    bands = []
    for r in rows:
        prot = datasets.load_from_disk(str(state / "protected" / r))
        pairs = []
        for i in picks:
            x = np.asarray(clean[i]["image"].convert("RGB"), dtype=np.int16)
            xp = np.asarray(prot[i]["image"].convert("RGB"), dtype=np.int16)
            k = max(8, int(np.abs(xp - x).max()))
            pairs.append((xp.astype(np.uint8), np.clip((xp - x) / (2 * k) + 0.5, 0, 1)))
        bands.append((r, pairs))
    gap, label_h, pad = 12, 22, 10
    band_h = [label_h + max(a.shape[0] for a, _ in pairs) for _, pairs in bands]
    width = pad + max(sum(2 * a.shape[1] + gap // 2 + gap for a, _ in pairs) for _, pairs in bands) + pad
    height = pad + sum(band_h) + gap * (len(bands) - 1) + pad
    dpi = 100
    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    top = pad
    for (r, pairs), bh in zip(bands, band_h):
        fig.text(pad / width, 1 - (top + 4) / height, f"{r}: protected | noise (x' - x) * 255/16 + 0.5, full size",
                 fontsize=9, va="top")
        left = pad
        for img, noise in pairs:
            h, w = img.shape[:2]
            for arr in (img, noise):
                ax = fig.add_axes([left / width, 1 - (top + label_h + h) / height, w / width, h / height])
                ax.imshow(arr, interpolation="nearest")
                ax.set_axis_off()
                left += w + gap // 2
            left += gap
        top += bh + gap
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA),
                    help="CIFAR-10 source: a Parquet folder (default ../shared/data/cifar10), 'bundled' or 'hub'")
    ap.add_argument("--train-rows", type=int, default=10000, help="class-balanced train rows (default 10000)")
    ap.add_argument("--test-rows", type=int, default=2000, help="class-balanced test rows (default 2000)")
    ap.add_argument("--resolutions", type=int, nargs="+", default=[32, 64], help="victim resolutions (default 32 64)")
    ap.add_argument("--epochs", type=int, default=30, help="victim epochs (default 30, the CPU protocol)")
    ap.add_argument("--victim", default=None, metavar="ARCH[:WIDTH]", help="victim (default: the library's)")
    ap.add_argument("--seed", type=int, default=0, help="data sizes, crafting and victims (default 0)")
    ap.add_argument("--only", nargs="+", choices=list(ROWS), default=None, help="run only these rows")
    ap.add_argument("--option", action="append", default=[], metavar="ROW_OR_METHOD.KEY=VALUE",
                    help="a crafting option, e.g. em.max_iters=2 or bayes.passes=5 (recorded; changes the cache key)")
    ap.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"), help="results folder")
    ap.add_argument("--state-dir", default=str(ROOT / "runs" / "anydata"), help="data, noise, caches (resume)")
    ap.add_argument("--bank-per-class", type=int, default=500,
                    help="the bank rows' native CIFAR-10 train rows per class, after the benchmark's (default 500)")
    ap.add_argument("--skip-12mp", action="store_true", help="skip the 12-megapixel memory measurement")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the image folder even if cached")
    ap.add_argument("--redo", nargs="+", default=[], choices=list(ROWS) + ["bank", "12mp", "all"],
                    help="forget the cached results of these rows (their crafting and victims) before running; "
                         "bank: the bank and the bank rows")
    args = ap.parse_args(argv)
    if args.epochs < 1 or any(r < 1 for r in args.resolutions) or args.bank_per_class < 1:
        raise SystemExit("--epochs, --resolutions and --bank-per-class must be positive.")
    extra = parse_options(args.option)
    names = [r for r in ROWS if args.only is None or r in args.only]
    state = Path(args.state_dir).resolve()
    out_dir = Path(args.out_dir)

    redo = set(ROWS) | {"12mp", "bank"} if "all" in args.redo else set(args.redo)
    if "bank" in redo:
        redo |= {r for r, (_, how, _) in ROWS.items() if how in BANK_HOWS}
        for f in (state / "state" / "bank.json", state / "noise" / "bank.job.json"):
            f.unlink(missing_ok=True)
        shutil.rmtree(state / "ckpt" / "bank", ignore_errors=True)
    for r in redo - {"12mp", "bank"}:
        for f in [state / "state" / f"craft-{r}.json", *(state / "state").glob(f"victim-{r}-r*.json"),
                  state / "noise" / f"{r}.job.json"]:
            f.unlink(missing_ok=True)
        shutil.rmtree(state / "ckpt" / r, ignore_errors=True)

    t_start = time.perf_counter()
    manifest = build_data(state / "data", args.data, args.train_rows, args.test_rows, args.seed, args.rebuild)
    clean = load_images(manifest["root"], "train")
    test = load_images(manifest["root"], "test")
    log(f"data: {len(clean)} train / {len(test)} test rows, columns {list(clean.features)}")
    env = environment()

    native = None
    if any(ROWS[n][1] in NATIVE_HOWS for n in names):
        native = native_config(args.data, args.train_rows, args.test_rows)
        clean_native = load_native(args.data, "train", args.train_rows)
        test_native = load_native(args.data, "test", args.test_rows)
        log(f"native: {len(clean_native)} train / {len(test_native)} test rows at 32x32, columns "
            f"{list(clean_native.features)}")
    bank_result = None
    if any(ROWS[n][1] in BANK_HOWS for n in names):
        names_ = manifest["splits"]["train"]["class_names"]
        mapping = derangement_class_map(names_, args.seed)
        bank_result = {"config": bank_config(args, manifest, extra), "class_map": mapping,
                       "class_map_names": {n: names_[k] for n, k in mapping.items()},
                       "class_map_rule": f"seeded permutation without a fixed point (numpy default_rng([{args.seed}, "
                                         "10]), redrawn until no class maps to itself)"}
    else:
        mapping = None

    def bank():
        if "craft" not in bank_result and "error" not in bank_result:
            try:
                bank_result["craft"] = run_bank(args, state, manifest, extra)
            except Exception as exc:      # recorded, not cached; the bank rows fail with it
                bank_result["error"] = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
        if "error" in bank_result:
            raise RuntimeError(f"the bank failed: {bank_result['error']}")
        return bank_result["craft"]

    rows, failed = [], False
    for name in names:
        try:
            row = run_row(name, args, state, manifest, extra, bank=bank, class_map=mapping)
        except Exception as exc:      # recorded, not cached: the other rows still run; a rerun tries again
            failed = True
            log(f"{name} FAILED: {type(exc).__name__}: {exc}")
            traceback.print_exc()
            method, how, options = ROWS[name]
            opts = {**BANK_OPTIONS, **extra.get("bank", {})} if how in BANK_HOWS else {**options, **extra.get(name, {})}
            rows.append({"name": name, "method": method, "how": how, "options": opts,
                         "error": f"{type(exc).__name__}: {exc}", "victims": {}})
            continue
        row["victims"] = {}
        is_native = row["how"] in NATIVE_HOWS
        for res in [NATIVE_RESOLUTION] if is_native else args.resolutions:
            try:
                row["victims"][str(res)] = run_victim(name, res, args, state, row["identity"],
                                                      clean_native if is_native else clean,
                                                      test_native if is_native else test)
            except Exception as exc:
                failed = True
                log(f"victim {name} @{res} FAILED: {type(exc).__name__}: {exc}")
                traceback.print_exc()
                row["victims"][str(res)] = {"error": f"{type(exc).__name__}: {exc}"}
        rows.append(row)

    photos = None
    if not args.skip_12mp:
        env_key = _key({k: env[k] for k in ("hf_unlearnable", "git_commit", "torch")})
        photos = run_photos(state, args.data, args.seed, env_key, "12mp" in redo)
        failed |= "error" in photos

    out_dir.mkdir(parents=True, exist_ok=True)
    figure = None
    try:
        if plot([r for r in FIGURE_ROWS if r in names], state, out_dir / f"{TAG}.png"):
            figure = f"{TAG}.png"
    except Exception as exc:
        failed = True
        log(f"figure FAILED: {type(exc).__name__}: {exc}")
        traceback.print_exc()
    victim = next((v["victim"] for r in rows for v in r.get("victims", {}).values() if "victim" in v), None)
    result = {"benchmark": TAG, "date": time.strftime("%Y-%m-%d"),
              "config": {"data": args.data, "train_rows": args.train_rows, "test_rows": args.test_rows,
                         "resolutions": args.resolutions, "epochs": args.epochs, "victim": args.victim,
                         "seed": args.seed, "rows": names, "options": extra, "skip_12mp": args.skip_12mp,
                         "bank_per_class": args.bank_per_class},
              "environment": env, "data": manifest, "native": native, "bank": bank_result, "victim": victim,
              "rows": rows, "photos_12mp": photos,
              "figure": figure, "seconds_this_run": round(time.perf_counter() - t_start, 1)}
    md = to_markdown(result)
    _write_json(out_dir / f"{TAG}.json", result)
    (out_dir / f"{TAG}.md").write_text(md)
    print(md, flush=True)
    if failed:
        log("some parts FAILED (see above and the table); finished parts are cached, rerun to retry the rest")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
