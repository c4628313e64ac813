"""The matrix: every method against every defence and threat model, on one protocol.

Rows: the library's methods with their defaults (per batch where that is their form, crafted otherwise; rem crafted
with fewer EOT draws and inner steps, see METHODS), and the per-batch forms of em and rem. Columns: every defence of
`evaluate` on fully protected rows (r = 1), the victim variants (VICTIM_COLUMNS: adversarial training at 4/255),
then two threat models at r = 0.5 with defence none:
`scratch` (a victim trained on the mix, beside its clean-only control) and `finetune` (a victim pre-trained on the
clean half, fine-tuned on the protected half, beside the same victim fine-tuned on the clean half and the
pre-trained victim alone). The clean columns (each defence on clean rows, and the controls) depend only on the rows
and the seed, so they are trained once and shared by all methods.

Data: class-balanced CIFAR-10 train rows (--per-class, default 1000 -> 10k, JPEG copy in ../shared) and the test set;
crafted sets are made in a fresh process each (benchmarks/efficacy.run_job) under --work, and every victim's result is
cached there, so an interrupted run resumes where it stopped.

    python benchmarks/matrix.py                                          # everything (many hours on 2 CPU cores)
    python benchmarks/matrix.py --methods ar lsp ops --defences none    # a part; the rest of the cells stay cached
    python benchmarks/matrix.py --per-class 20 --test 100 --epochs 1 --methods random ar --defences none cutout \\
        --work /tmp/matrix-smoke --out /tmp/matrix-smoke              # a smoke run

Writes <out>/matrix.json, matrix.md and matrix.png (a heatmap of test accuracy, lower = stronger protection); the
tables hold the cells measured so far (missing ones are left blank).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from efficacy import DEFAULT_DATA, load_subset, run_job, write_results  # noqa: E402

# name -> (method, how, options): each method's library defaults
METHODS = {
    "random": ("random", "per-batch", {}),
    "em-classwise": ("em", "craft", {"mode": "classwise"}),
    "em-samplewise": ("em", "craft", {"mode": "samplewise"}),
    "em-per-batch": ("em", "per-batch", {}),     # protect(method="em"): against the fixed bundled surrogate
    "bayes": ("bayes", "craft", {}),
    "pue": ("pue", "craft", {}),
    "ar": ("ar", "per-batch", {}),
    "lsp": ("lsp", "per-batch", {}),
    "ops": ("ops", "per-batch", {}),
    "tap": ("tap", "per-batch", {}),
    # crafted (the paper's co-trained, adversarially trained surrogate) with 2 EOT draws and 2 inner steps, 10
    # rounds: the defaults' 5 and 5 cost about 3.6x (one round on 1,000 rows, one thread: 137 s against 38 s, so
    # ~20 min a round on 10k); and the per-batch form against the fixed bundled surrogate
    "rem": ("rem", "craft", {"eot": 2, "adversarial_steps": 2, "max_iters": 10}),
    "rem-per-batch": ("rem", "per-batch", {}),
}
THREATS = ("scratch-mix", "finetune")       # the r = 0.5 columns
# columns whose victim trains otherwise, under defence none: adversarial training at half the budget, REM's threat
# model (its noise is made to survive adversaries smaller than itself; evaluate's "adversarial" is at 8/255)
VICTIM_COLUMNS = {"adversarial-4": {"adversarial_epsilon": 4 / 255, "adversarial_steps": 1}}


def defence_names() -> list[str]:
    from hf_unlearnable.defences import DEFENCES

    return ["none"] + sorted(d for d in DEFENCES if d != "none")


def column_names() -> list[str]:
    """The r = 1 columns: every defence of evaluate, then the victim variants."""
    return defence_names() + list(VICTIM_COLUMNS)


def victim_for(victim, column: str):
    """The victim of a column: the protocol's own, or its variant (VICTIM_COLUMNS)."""
    import dataclasses

    if column not in VICTIM_COLUMNS:
        return victim
    return dataclasses.replace(victim, train=dataclasses.replace(victim.train, **VICTIM_COLUMNS[column]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--per-class", type=int, default=1000)
    ap.add_argument("--test", type=int, default=0, help="test rows (default 0 = all 10,000)")
    ap.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    ap.add_argument("--defences", nargs="+", default=None,
                    help=f"default: every defence of evaluate, and the victim variants {list(VICTIM_COLUMNS)}")
    ap.add_argument("--threats", nargs="*", choices=THREATS, default=list(THREATS))
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--work", default=str(ROOT / "runs" / "matrix"))
    args = ap.parse_args(argv)
    defences = args.defences or column_names()
    unknown = sorted(set(defences) - set(column_names()))
    if unknown:
        ap.error(f"unknown defence(s) {unknown}; choose from {column_names()}")

    import datasets

    from hf_unlearnable import __version__, evaluate
    from hf_unlearnable.evaluate import VictimConfig

    victim = VictimConfig.auto(args.epochs)
    train, test = load_subset(args.data, args.per_class, args.test or None)
    work = Path(args.work)
    cache = work / f"victims-{args.per_class}-{len(test)}-e{args.epochs}-s{args.seed}"
    cache.mkdir(parents=True, exist_ok=True)
    clean_file = cache / "clean.json"

    def cells(name: str, protected) -> dict:
        part = cache / f"{name}.json"
        done = _read(part)
        todo = [(d, "scratch", 1.0) for d in defences if d not in done] + \
            [("none", t.split("-")[0], 0.5) for t in args.threats if t not in done]
        for d, protocol, r in todo:
            key = d if r == 1.0 else f"{protocol}-mix" if protocol == "scratch" else protocol
            base_key = f"{d}" if r == 1.0 else key
            t0 = time.perf_counter()
            rep = evaluate(protected, test, clean=train, mix=[r], defences=["none" if d in VICTIM_COLUMNS else d],
                           victim=victim_for(victim, d), seed=args.seed, protocol=protocol,
                           baselines=base_key not in _read(clean_file))
            acc = {row["train_set"]: row["test_accuracy"] for row in rep.rows}
            if r == 1.0:
                value, control = acc["protected"], acc.get("clean")
            elif protocol == "scratch":
                value, control = acc["mix"], acc.get("clean-only control")
            else:
                value = acc["fine-tuned on protected"]
                control = {"pre-trained": acc["pre-trained"], "fine-tuned on clean": acc["fine-tuned on clean"]} \
                    if "fine-tuned on clean" in acc else None
            print(f"[matrix] {name} {key}: {100 * value:.2f} % ({time.perf_counter() - t0:.0f} s)", flush=True)
            done = _merge(part, {key: value})
            if control is not None:
                _merge(clean_file, {base_key: control}, keep=True)
        return done

    jobs, table = {}, {}
    for name in args.methods:
        method, how, options = METHODS[name]
        jobs[name] = run_job({"name": name, "method": method, "how": how, "options": {"seed": args.seed, **options},
                              "data": args.data, "per_class": args.per_class, "out": str(work / name)})
        table[name] = cells(name, datasets.load_from_disk(str(work / name)))
    # every cell measured so far (also by earlier runs with other --methods / --defences)
    for part in sorted(cache.glob("*.json")):
        if part.stem != "clean" and part.stem in METHODS:
            table.setdefault(part.stem, json.loads(part.read_text()))
    columns = [d for d in column_names() if any(d in v for v in table.values())] + \
        [t for t in THREATS if any(t in v for v in table.values())]
    best = {c: min((v[c], m) for m, v in table.items() if c in v)[1] for c in columns}
    result = {"benchmark": "matrix", "train_rows": len(train), "test_rows": len(test), "epochs": args.epochs,
              "seed": args.seed, "victim": victim.to_dict(), "victim_columns": VICTIM_COLUMNS, "columns": columns,
              "clean": _read(clean_file),
              "protected": {m: table[m] for m in METHODS if m in table}, "best": best,
              "crafting": {m: {k: j.get(k) for k in ("method", "how", "options", "images_per_second")}
                           for m, j in jobs.items()},
              "hf_unlearnable": __version__, "date": time.strftime("%Y-%m-%d")}
    write_results(args.out, "matrix", result, to_markdown(result))
    plot(result, Path(args.out) / "matrix.png")
    return 0


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _merge(path: Path, cells: dict, keep: bool = False) -> dict:
    """Adds cells to the JSON dict at path and returns it: read, update and replaced under a lock, so that two runs
    at once (other --methods or --defences, sharing the clean columns) never drop each other's cells. keep: a cell
    already there stays (a clean column is the same whoever measured it)."""
    import fcntl

    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = _read(path)
        data.update({k: v for k, v in cells.items() if not (keep and k in data)})
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)
    return data


def _pct(v) -> str:
    return "" if v is None else f"{100 * v:.2f}"


def to_markdown(r: dict) -> str:
    cols, clean = r["columns"], r["clean"]

    def clean_cell(c: str) -> str:
        if c == "finetune":
            v = clean.get(c) or {}
            return f"{_pct(v.get('pre-trained'))} → {_pct(v.get('fine-tuned on clean'))}" if v else ""
        return _pct(clean.get(c))

    lines = [f"# Protection matrix ({r['date']}, hf_unlearnable {r['hf_unlearnable']})", "",
             f"{r['train_rows']} class-balanced CIFAR-10 train rows, test accuracy (%) on {r['test_rows']} test rows; "
             f"victim {r['victim']['arch']} {r['epochs']} epochs, crop+flip, seed {r['seed']}. Defence columns: 100 % "
             "of the rows protected, the victim applying that defence (adversarial: fast adversarial training at 8/255; "
             "adversarial-4: at 4/255, half the budget, REM's threat model). scratch-mix: half the rows protected, trained "
             "from scratch (clean row: the clean half alone). finetune: pre-trained on the clean half, fine-tuned on "
             "the protected half (clean row: the pre-trained victim → fine-tuned on the clean half instead). Lower is "
             "a stronger protection; **bold** is the best method of a column.", "",
             "| trained on | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols),
             "| clean | " + " | ".join(clean_cell(c) for c in cols) + " |"]
    for m, v in r["protected"].items():
        cells = [(f"**{_pct(v[c])}**" if r["best"].get(c) == m else _pct(v[c])) if c in v else "" for c in cols]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    # the clean row first (finetune: the pre-trained victim), the reference every cell is read against
    rows = {"clean": {c: (v.get("pre-trained") if isinstance(v, dict) else v) for c, v in r["clean"].items()},
            **r["protected"]}
    methods, cols = list(rows), r["columns"]
    grid = np.full((len(methods), len(cols)), np.nan)
    for i, m in enumerate(methods):
        for j, c in enumerate(cols):
            if rows[m].get(c) is not None:
                grid[i, j] = 100 * rows[m][c]
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(cols), 1.0 + 0.45 * len(methods)))
    im = ax.imshow(grid, cmap="RdYlGn_r", vmin=0, vmax=100, aspect="auto")
    for i in range(len(methods)):
        for j in range(len(cols)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(cols)), cols, rotation=40, ha="right")
    ax.set_yticks(range(len(methods)), methods)
    ax.set_title("victim test accuracy (%) — lower protects more")
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
