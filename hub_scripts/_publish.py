"""Shared bits of the publish_* scripts: the endpoint/token options and a class-balanced CIFAR-10 subset.

The endpoint must be set before huggingface_hub is imported (it reads HF_ENDPOINT once), so `hub_options`
applies it to the environment right after parsing and refuses to run when huggingface_hub was already imported
with another endpoint. The token comes from --token, else $HF_TOKEN / the saved login; it is passed to the Hub
client only, never printed or written.
"""

from __future__ import annotations

import argparse
import os
import sys


def add_hub_options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--repo-id", required=True, help="target model repo, e.g. me/em-cifar10-classwise")
    ap.add_argument("--endpoint", default=None,
                    help="Hub endpoint (default: $HF_ENDPOINT or https://huggingface.co); a self-hosted Hub needs "
                         "HF_HUB_DISABLE_XET=1 unless it speaks Xet")
    ap.add_argument("--token", default=None, help="write token (default: $HF_TOKEN or the saved login)")
    ap.add_argument("--private", action="store_true", help="create the repo private")
    ap.add_argument("--branch", default=None, help="push to this branch (created if needed)")
    ap.add_argument("--license", default=None, help="license of the artefact (card front matter)")
    ap.add_argument("--overwrite-card", action="store_true", help="replace an existing README.md on the Hub")


def apply_endpoint(args: argparse.Namespace) -> None:
    if not args.endpoint:
        return
    endpoint = args.endpoint.rstrip("/")
    hub = sys.modules.get("huggingface_hub.constants")
    if hub is not None and hub.ENDPOINT.rstrip("/") != endpoint:
        raise SystemExit(f"error: huggingface_hub is already imported with endpoint {hub.ENDPOINT}; run this script "
                         f"as a program (or set HF_ENDPOINT={endpoint} before importing huggingface_hub).")
    os.environ["HF_ENDPOINT"] = endpoint


def balanced_subset(ds, rows: int | None, seed: int):
    """The first rows/K rows of each class (deterministic), in original order; all rows when rows is None."""
    import numpy as np

    if rows is None or rows >= ds.num_rows:
        return ds
    labels = np.asarray(ds["label"])
    classes = np.unique(labels)
    per = max(1, rows // len(classes))
    idx = np.sort(np.concatenate([np.flatnonzero(labels == k)[:per] for k in classes]))
    return ds.select(idx).flatten_indices()


def data_description(data: str, n: int) -> str:
    if data == "bundled":
        return f"the bundled pixel-exact CIFAR-10 slice (hf_unlearnable/data/cifar10_slice), {n} train rows"
    if data == "hub":
        return f"the Hub's CIFAR-10 train split, {n} rows"
    return f"CIFAR-10 train split from {data}, {n} rows"


def push(artefact, args: argparse.Namespace, commit_message: str):
    """Push a Noise or Surrogate with the shared Hub options; returns the commit info."""
    return artefact.push_to_hub(args.repo_id, private=args.private, token=args.token, branch=args.branch,
                                license=args.license, overwrite_card=args.overwrite_card,
                                commit_message=commit_message)
