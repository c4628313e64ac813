"""The dataset card of a protected repo: what each config did, where its rows came from, under which license, in
model_cards/dataset_card.md's words, and the YAML front matter shared with the owner's own card text."""

from __future__ import annotations

import json
import re

from ._artefacts import render_card


def license_note(record: dict, card_license: str) -> str:
    if card_license != record["id"]:
        return "set in this card by its owner."
    if record["confirmed"]:
        return "set by the publisher."
    if record["origin"].startswith("inherited"):
        return (f"{record['origin'].replace('inherited from ', 'inherited from `', 1)}`. **The publisher must "
                "confirm** that this license allows redistributing modified images (pass `license=` to "
                "`push_protected` once checked).")
    return ("the source's license could not be determined. **Set it before sharing** (`push_protected(..., "
            "license=...)`): a protected copy is still a copy of the source images.")


def split_card(text: str) -> tuple[dict, str]:
    import yaml

    m = re.match(r"^---\s*\n(.*?)\n---\s*\n?", text, re.S)
    if not m:
        return {}, text
    return (yaml.safe_load(m.group(1)) or {}), text[m.end():]


def join_card(front: dict, body: str) -> str:
    import yaml

    fm = yaml.safe_dump(front, sort_keys=False, allow_unicode=True, width=1000).strip()
    return f"---\n{fm}\n---\n\n{body.lstrip()}"


def pretty_name(repo_id: str) -> str:
    name = repo_id.split("/")[-1]
    return name if "unlearnable" in name.lower() else f"{name} (unlearnable)"


def size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"


def describe_source(entry: dict) -> str:
    s = entry["source"]
    if not s.get("dataset"):
        return "not recorded (pass `source_dataset=` to `push_protected`)"
    rev = s.get("revision")
    return f"`{s['dataset']}`" + (f" at revision `{rev}`" if rev else " (revision not recorded)")


def what(entry: dict) -> str:
    m, seed = entry["method"], entry["seed"]
    eps = entry["epsilon_255"] if entry.get("norm", "linf") == "linf" else f"{entry['epsilon']:g}"
    if entry.get("kind"):
        noise = entry.get("noise") or {}
        extra = ""
        if noise.get("resolution"):
            h, w = noise["resolution"]
            extra += f" Crafted at {h}x{w}; each image got it resized to its own size."
        if noise.get("clustering"):
            extra += (f" Label-agnostic: its classes are {noise['clustering']['clusters']} clusters of the "
                      f"`{noise['clustering']['surrogate']}` surrogate's features, found without labels.")
        if noise.get("class_map") is not None:
            extra += (" The dataset's classes were mapped onto the noise's explicitly: class_map = `"
                      + json.dumps(noise["class_map"], sort_keys=True) + "`.")
        return (f"crafted `{m}` noise ({entry['kind']}, ε = {eps}, seed {seed}) applied with "
                "`protect(noise=...)`; options: `" + json.dumps(entry["options"], sort_keys=True) + "`." + extra)
    return (f"`protect(method=\"{m}\", epsilon={eps}, seed={seed})` applied per batch; options: `"
            + json.dumps(entry["options"], sort_keys=True) + "`.")


def render(repo_id: str, protection: dict, front: dict, license_id: str, license_note: str,
            source_dataset: str | None) -> str:
    configs = []
    for name in sorted(protection["configs"]):
        e = dict(protection["configs"][name])
        e["what"] = what(e)
        e["source_description"] = describe_source(e)
        e["columns_changed"] = ", ".join(f"`{c}`" for c in e["columns_changed"]) + (
            "" if e["columns_verified"] else " (from the transform's contract; not verified: no `original=`)")
        e["columns_unchanged"] = ", ".join(f"`{c}`" for c in e["columns_unchanged"]) or "none"
        e["split"] = sorted(e["splits"])[0]
        e["num_rows"] = sum(e["splits"].values())
        e["report"] = e.get("report_markdown")
        e["certificate"] = e.get("certificate_markdown")
        configs.append(e)
    src = f"[`{source_dataset}`](https://huggingface.co/datasets/{source_dataset})" if source_dataset else "a dataset"
    pretty = front.get("pretty_name") or pretty_name(repo_id)
    return render_card("dataset_card.md", front, pretty_name=pretty, source_link=src, license=license_id,
                       license_note=license_note, configs=configs, repo_id=repo_id)
