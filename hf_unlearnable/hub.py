"""Publish protected datasets on the Hub with a card that says what was done and what it measurably achieves.

    protected = train.map(transform := protect(noise=noise), batched=True, with_indices=True)
    report = evaluate(protected, test, clean=train, mix=[1.0, 0.5], defences=["none", "jpeg"])
    push_protected(protected, "me/cifar10-unlearnable", transform=transform, original=train, report=report,
                   source_dataset="uoft-cs/cifar10")

The data goes up with `Dataset.push_to_hub` (one dataset config per method and epsilon); a second commit adds the
card (README.md, from model_cards/dataset_card.md) and `protection.json` (machine-readable provenance for every
config in the repo). The token is only ever passed to the Hub client, never logged or written.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _dataset_card as _card
from ._images import epsilon_levels
from ._norms import check_budget, describe
from .errors import ProtectionError
from .noise import Noise

logger = logging.getLogger(__name__)

PROTECTION_FILE = "protection.json"
PROTECTION_FORMAT = "hf_unlearnable.protection/1"
BEGIN, END = "<!-- hf_unlearnable:begin", "<!-- hf_unlearnable:end -->"
TAGS = ["hf_unlearnable", "unlearnable-examples", "availability-poisoning"]


@dataclass
class PushResult:
    """What push_protected did: where the data and card went, and the provenance it recorded."""

    repo_id: str
    config_name: str
    split: str
    revision: str
    commit_oid: str
    card: str = field(repr=False)
    protection: dict = field(repr=False)


@dataclass
class _Provenance:
    method: str
    epsilon: float
    seed: int | None
    kind: str | None = None
    options: dict = field(default_factory=dict)
    noise: dict | None = None
    norm: str = "linf"           # the norm of epsilon (_norms.py): crafted noise is always L-inf


def _provenance(transform, noise, method, epsilon, seed) -> _Provenance:
    from .transform import ProtectTransform

    given = [n for n, v in (("transform", transform), ("noise", noise), ("method", method)) if v is not None]
    if len(given) != 1:
        raise ProtectionError(
            "push_protected must know how the data was protected: pass exactly one of transform=<the protect(...) "
            "you mapped>, noise=<the Noise you applied>, or method='...' (with epsilon= and seed=)"
            + (f"; got {given}." if given else "."))
    if transform is not None:
        if not isinstance(transform, ProtectTransform):
            raise ProtectionError(f"transform= must be what protect(...) returned, got {type(transform).__name__}.")
        if transform.noise is not None:
            prov = _provenance(None, transform.noise, None, None, None)
            if transform.class_map is not None:     # the user's classes mapped onto the bank's: on the card
                cm = transform.class_map
                prov.noise["class_map"] = cm if isinstance(cm, str) else {   # names and label indices apart (JSON)
                    "by_name": {k: v for k, v in cm.items() if isinstance(k, str)},
                    "by_label_index": {str(k): v for k, v in cm.items() if not isinstance(k, str)}}
            return prov
        else:
            opts = {k: v for k, v in (transform._method_state or {}).items() if k not in ("epsilon", "seed")}
            for k, v in opts.items():  # a Surrogate option is frozen as (tag, config, weights, name): keep the name
                if isinstance(v, tuple) and v and v[0] == "__surrogate__":
                    opts[k] = v[3] or "<in-memory surrogate>"
            if transform.resolution is not None:
                opts["resolution"] = list(transform.resolution)
            return _Provenance(transform.method_name, transform.epsilon, transform.seed,
                               options=json.loads(json.dumps(opts, default=str)), norm=transform.norm)
    if noise is not None:
        if not isinstance(noise, Noise):
            raise ProtectionError(f"noise= must be a Noise (see load_noise), got {type(noise).__name__}.")
        c = noise.config
        return _Provenance(c.method, c.epsilon, c.seed, kind=c.kind, options=dict(c.method_config),
                           noise={"kind": c.kind, "rows": len(noise), "epsilon_255": c.epsilon_255,
                                  "resolution": list(noise.resolution), "clustering": c.clustering,
                                  "source": c.source, "library_version": c.library_version,
                                  "stats": c.stats})
    if epsilon is None:
        raise ProtectionError(f"method={method!r} was given without epsilon=: pass the budget the data was "
                              "protected with (e.g. 8/255).")
    from .methods import METHODS

    norm = METHODS[method].norm if method in METHODS else "linf"
    return _Provenance(str(method), check_budget(norm, epsilon), seed, norm=norm)


def _image_column(ds, image_column: str | None) -> str:
    from ._data import find_columns

    return find_columns(ds.features, ds.column_names, image_column, None, False)[0]


def _pixels(ds, column: str, rows: int) -> list[np.ndarray]:
    from datasets import Image

    from ._images import decode_image

    cells = ds.select(range(rows)).cast_column(column, Image(decode=False))[column]
    return [decode_image(c, column, i) for i, c in enumerate(cells)]


def _compare_with_original(ds, original, image_column: str, quality_rows: int | None) -> tuple[list, list, dict]:
    """(changed columns, unchanged columns, quality); refuses an `original` that is not the same rows in order."""
    from . import _quality

    if original.num_rows != ds.num_rows:
        raise ProtectionError(f"original= has {original.num_rows} rows but the protected dataset has {ds.num_rows}: "
                              "pass the dataset the protected one was made from, row for row.")
    if set(original.column_names) != set(ds.column_names):
        raise ProtectionError(f"original= has columns {original.column_names} but the protected dataset has "
                              f"{ds.column_names}: pass the dataset the protected one was made from.")
    changed, unchanged = [], []
    for col in ds.column_names:
        if col == image_column:
            continue
        a, b = original[col], ds[col]
        if a != b:
            bad = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
            raise ProtectionError(f"column {col!r}, row {bad}: differs between original= and the protected dataset; "
                                  "protection changes only the image column, so these are not the same rows in "
                                  "the same order.")
        unchanged.append(col)
    n = ds.num_rows if quality_rows is None else min(int(quality_rows), ds.num_rows)
    prot, orig = _pixels(ds, image_column, n), _pixels(original, image_column, n)
    quality = _quality.compare(prot, orig)
    if quality["identical_rows"] < n:
        changed.append(image_column)
    return changed, unchanged, quality


def _source_info(source_dataset: str | None, source_revision: str | None, token) -> dict:
    """The source's Hub revision and license, when it is a Hub dataset that can be read; {} otherwise."""
    if not source_dataset:
        return {}
    from huggingface_hub import HfApi

    try:
        info = HfApi(token=token).dataset_info(source_dataset, revision=source_revision)
    except Exception as exc:  # the source may be private, gone or unreachable: say so in the card, do not fail
        logger.info("could not read source dataset %s on the Hub: %s", source_dataset, type(exc).__name__)
        return {}
    card = info.card_data.to_dict() if info.card_data is not None else {}
    return {"sha": info.sha, "license": card.get("license")}


def _license(license: str | None, source_dataset: str | None, source: dict, original) -> dict:
    """The license record: set by the publisher (confirmed), inherited from the source (to confirm), or unknown."""
    if license is not None:
        return {"id": license, "origin": "publisher", "confirmed": True}
    inherited = source.get("license") or (getattr(getattr(original, "info", None), "license", None) or None)
    if isinstance(inherited, list):
        inherited = inherited[0] if len(inherited) == 1 else ", ".join(inherited)
    if inherited:
        origin = source_dataset if source.get("license") else "the original dataset's info"
        return {"id": inherited, "origin": f"inherited from {origin}", "confirmed": False}
    return {"id": "unknown", "origin": "not found", "confirmed": False}


def push_protected(dataset: Any, repo_id: str, *, transform: Any = None, noise: Noise | None = None,
                   method: str | None = None, epsilon: float | None = None, seed: int | None = None,
                   original: Any = None, report: Any = None, certificate: Any = None,
                   source_dataset: str | None = None, source_revision: str | None = None,
                   license: str | None = None, config_name: str | None = None, split: str = "train",
                   private: bool = False, revision: str | None = None, token: str | bool | None = None,
                   overwrite_card: bool = False, image_column: str | None = None, quality_rows: int | None = None,
                   max_shard_size: str | int | None = None, pretty_name: str | None = None) -> PushResult:
    """Push a protected `datasets.Dataset` to a Hub dataset repo with an honest card and protection.json.

    How it was protected: exactly one of `transform` (the `protect(...)` you mapped), `noise` (the Noise you
    applied) or `method` + `epsilon` (+ `seed`). `original`: the unprotected dataset, row for row; with it the card
    states which columns changed (checked: every other column must be identical) and PSNR/SSIM/L-inf of the
    images (over the first `quality_rows` rows, default all). `report` (from `evaluate`) and `certificate` (from
    `certify`) fill the measured-effect sections; without a report the card says the protection is unverified.
    `source_dataset` (a Hub id) and `source_revision` name the source; its license is inherited and flagged for
    the publisher to confirm unless `license=` is given.

    One dataset config per method and epsilon (`config_name`, default e.g. "em-classwise-eps8"); pushing another
    config to the same repo adds it to the card and to protection.json. Card text outside the generated block is
    never replaced; `overwrite_card=True` regenerates the whole card (and its license field). `revision` pushes
    to a branch (created if needed). `private` applies when the repo is created.
    """
    from datasets import Dataset
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import EntryNotFoundError

    from ._version import __version__

    if not isinstance(dataset, Dataset):
        raise ProtectionError(f"dataset must be a datasets.Dataset (one split), got {type(dataset).__name__}; "
                              "for a DatasetDict push each split with split=.")
    if original is not None and not isinstance(original, Dataset):
        raise ProtectionError(f"original= must be a datasets.Dataset, got {type(original).__name__}.")
    prov = _provenance(transform, noise, method, epsilon, seed)
    k = epsilon_levels(prov.epsilon) if prov.norm == "linf" else None
    eps_tag = f"eps{k}" if k is not None else f"{prov.norm}-{prov.epsilon:g}"
    config_name = config_name or (f"{prov.method}-{prov.kind}-{eps_tag}" if prov.kind else f"{prov.method}-{eps_tag}")
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", config_name) or config_name == "default":
        raise ProtectionError(f"config_name={config_name!r}: use letters, digits, '.', '_' and '-' (not 'default').")
    img_col = _image_column(dataset, image_column)
    if original is not None:
        changed, unchanged, quality = _compare_with_original(dataset, original, img_col, quality_rows)
    else:
        changed, unchanged, quality = [img_col], [c for c in dataset.column_names if c != img_col], None
    if report is not None and not hasattr(report, "to_dict"):
        raise ProtectionError(f"report= must be the Report that evaluate() returned, got {type(report).__name__}.")
    if certificate is not None and not hasattr(certificate, "to_dict"):
        raise ProtectionError(f"certificate= must be what certify() returned, got {type(certificate).__name__}.")

    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True).repo_id
    branch = revision or "main"
    if branch != "main":
        api.create_branch(repo_id, branch=branch, repo_type="dataset", exist_ok=True)
    source = _source_info(source_dataset, source_revision, token)
    source_rev = source_revision or source.get("sha")
    license_record = _license(license, source_dataset, source, original)

    logger.info("pushing %d rows to %s (config %s, split %s, revision %s)", dataset.num_rows, repo_id, config_name,
                split, branch)
    dataset.push_to_hub(repo_id, config_name=config_name, split=split, private=private, token=token,
                        revision=branch, max_shard_size=max_shard_size,
                        commit_message=f"Upload protected data: config {config_name}, split {split}")

    head = api.repo_info(repo_id, repo_type="dataset", revision=branch).sha

    def read(path: str) -> str | None:
        try:
            with open(api.hf_hub_download(repo_id, path, repo_type="dataset", revision=head), encoding="utf-8") as f:
                return f.read()
        except EntryNotFoundError:
            return None

    old_protection = json.loads(read(PROTECTION_FILE) or "{}")
    # The repo's license record: the publisher's word is kept across later pushes that do not restate it.
    repo_license = old_protection.get("license")
    if license is not None or not repo_license:
        repo_license = license_record
    license_id = repo_license["id"]
    protection = {"format": PROTECTION_FORMAT, "repo_id": repo_id, "license": repo_license,
                  "configs": dict(old_protection.get("configs", {}))}
    previous = protection["configs"].get(config_name, {})
    same_budget = (previous.get("norm", "linf"), previous.get("epsilon_255") if k is not None else
                   previous.get("epsilon")) == (prov.norm, f"{k}/255" if k is not None else prov.epsilon)
    splits = dict(previous.get("splits", {})) if same_budget else {}
    splits[split] = dataset.num_rows
    protection["configs"][config_name] = {
        "config_name": config_name, "splits": splits, "method": prov.method, "kind": prov.kind,
        "epsilon": prov.epsilon, "epsilon_255": f"{k}/255" if k is not None else None, "norm": prov.norm,
        "budget": f"{k}/255" if k is not None else describe(prov.norm, prov.epsilon), "seed": prov.seed,
        "options": prov.options,
        "noise": prov.noise, "library_version": __version__, "image_column": img_col,
        "columns_changed": changed, "columns_unchanged": unchanged, "columns_verified": original is not None,
        "quality": quality, "rows_changed": None if quality is None else
        {"changed": quality["changed_rows"], "of": quality["rows"], "unchanged": quality["identical_rows"]},
        "source": {"dataset": source_dataset, "revision": source_rev},
        "license": license_record,
        "report": report.to_dict() if report is not None else None,
        "report_markdown": report.to_markdown() if report is not None else None,
        "certificate": certificate.to_dict() if certificate is not None else None,
        "certificate_markdown": certificate.to_markdown() if certificate is not None else None,
        "pushed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }

    # Front matter: what datasets wrote (configs, dataset_info) + ours; the owner's keys win unless overwrite_card.
    existing_front, existing_body = _card.split_card(read("README.md") or "")
    total_rows = sum(sum(c["splits"].values()) for c in protection["configs"].values())
    ours = {"license": license_id, "pretty_name": pretty_name or _card.pretty_name(repo_id),
            "task_categories": ["image-classification"], "task_ids": ["multi-class-image-classification"],
            "size_categories": [_card.size_category(total_rows)],
            "source_datasets": [source_dataset] if source_dataset else None}
    front = dict(existing_front)
    ours_before = (old_protection.get("license") or {}).get("id")
    for key, value in ours.items():
        # size_categories follows the data; a license we wrote earlier follows the publisher's latest word
        if value is not None and (overwrite_card or key not in front or key == "size_categories"
                                  or (key == "license" and front.get("license") == ours_before)):
            front[key] = value
    methods = sorted({c["method"] for c in protection["configs"].values()})
    front["tags"] = list(dict.fromkeys([*(front.get("tags") or []), *TAGS, *methods]))
    card_license = str(front.get("license", license_id))
    card_note = _card.license_note(repo_license, card_license)
    _, generated = _card.split_card(_card.render(repo_id, protection, front, card_license, card_note, source_dataset))
    if overwrite_card or not existing_body.strip():
        body = generated
    elif BEGIN in existing_body and END in existing_body:
        start, stop = existing_body.index(BEGIN), existing_body.index(END) + len(END)
        body = existing_body[:start] + generated.strip() + existing_body[stop:]
    else:  # the owner's own card: keep every word of it, add ours after it
        body = existing_body.rstrip() + "\n\n" + generated
    card = _card.join_card(front, body)
    commit = api.create_commit(
        repo_id, repo_type="dataset", revision=branch, parent_commit=head,
        commit_message=f"Card and protection.json for config {config_name}",
        operations=[CommitOperationAdd("README.md", card.encode("utf-8")),
                    CommitOperationAdd(PROTECTION_FILE, (json.dumps(protection, indent=2, sort_keys=True,
                                                                    default=str) + "\n").encode("utf-8"))])
    logger.info("card and %s committed to %s@%s", PROTECTION_FILE, repo_id, branch)
    return PushResult(repo_id, config_name, split, branch, commit.oid, card, protection)
