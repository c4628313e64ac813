"""Small data (issue "Any image dataset", item 7): do em's defaults protect an individual's 2,000 images against a
victim architecture the library's tests never train?

2,000 class-balanced CIFAR-10 train rows outside the bundled slice and the mixing benchmark's rows (the 4200th to
4399th of each class), crafted with `craft(ds, "em", mode=..., **options)` and applied with `protect(noise=...)`.
Victims: ResNet-18 at width 16 (the tests train ConvNet victims only), 30 epochs, seed 0,
at the default working resolution. `--split val` scores them on 1,000 other train rows (4400th to 4499th of each
class), where the defaults are chosen; `--split test` on 2,000 class-balanced rows of the test split.

    python benchmarks/smalldata.py --split val --candidates em-classwise em-classwise-all-rows
    python benchmarks/smalldata.py --split test

Each candidate is a named option set (CANDIDATES); results are cached per (candidate, split, victim, epochs) under
--work, so a rerun skips finished ones. Writes benchmarks/results/smalldata-<split>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> (mode, options). "em-classwise" / "em-samplewise" are the library's defaults, whatever they are now.
CANDIDATES: dict[str, tuple[str, dict]] = {
    "em-classwise": ("classwise", {}),
    "em-samplewise": ("samplewise", {}),
    "em-classwise-all-rows": ("classwise", {"subset": 1.0}),
    "em-classwise-mean-20pct": ("classwise", {"subset": 0.2, "class_step": "mean"}),   # the defaults before class_step's "sign"
    "em-classwise-all-rows-20": ("classwise", {"subset": 1.0, "min_iters": 20}),
    "em-classwise-resnet": ("classwise", {"surrogate_arch": "resnet18", "surrogate_width": 16}),
    "em-classwise-demo": ("classwise", {"batch_size": 64, "min_iters": 20, "max_iters": 20}),
    "em-samplewise-20": ("samplewise", {"min_iters": 20}),
    "em-samplewise-resnet": ("samplewise", {"surrogate_arch": "resnet18", "surrogate_width": 16}),
}
TRAIN_ROWS = (4200, 4400)
VAL_ROWS = (4400, 4500)


def _data(source: str, split: str):
    from hf_unlearnable.data import load_cifar10, per_class_rows

    train = load_cifar10("train", source)
    labels = train["label"]
    rows = train.select(per_class_rows(labels, *TRAIN_ROWS)).flatten_indices()
    if split == "val":
        evaluation = train.select(per_class_rows(labels, *VAL_ROWS)).flatten_indices()
    else:
        test = load_cifar10("test", source)
        evaluation = test.select(per_class_rows(test["label"], 0, 200)).flatten_indices()
    return rows, evaluation


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "cifar10"))
    ap.add_argument("--split", choices=("val", "test"), default="val")
    ap.add_argument("--candidates", nargs="+", choices=sorted(CANDIDATES), default=["em-classwise", "em-samplewise"])
    ap.add_argument("--victim", default="resnet18:16", help="ARCH[:WIDTH] (default resnet18:16)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--work", default=str(ROOT / "runs" / "smalldata"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)

    import datasets

    from hf_unlearnable import __version__, craft, evaluate, protect

    datasets.disable_progress_bars()
    arch, _, width = args.victim.partition(":")
    victim = {"arch": arch, "width": int(width) if width else None}
    train, evaluation = _data(args.data, args.split)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    def victim_accuracy(ds) -> float:
        report = evaluate(ds, evaluation, victim=victim, epochs=args.epochs, seed=0, progress=False)
        return report.accuracy("protected", 1.0)

    def cached(key: str, fn) -> dict:
        path = work / f"{key}.json"
        if path.exists():
            return json.loads(path.read_text())
        result = fn()
        path.write_text(json.dumps(result, indent=1))
        return result

    tag = f"{args.split}-{args.victim.replace(':', 'w')}-e{args.epochs}"
    rows = [dict(cached(f"clean-{tag}", lambda: {"candidate": "clean", "accuracy": victim_accuracy(train)}))]
    print(f"clean: {100 * rows[0]['accuracy']:.2f} %", flush=True)
    for name in args.candidates:
        mode, options = CANDIDATES[name]

        def run(mode=mode, options=options, name=name):
            t0 = time.perf_counter()
            noise = craft(train, "em", mode=mode, **options)
            protected = train.map(protect(noise=noise), batched=True)
            seconds = time.perf_counter() - t0
            return {"candidate": name, "mode": mode, "options": options, "accuracy": victim_accuracy(protected),
                    "craft_seconds": round(seconds, 1), "rounds": noise.config.stats.get("rounds"),
                    "final_error": noise.config.stats.get("final_error"),
                    "method_config": noise.config.method_config}

        # the defaults may change: their cache key holds the resolved config
        key = f"{name}-{tag}-shuffled" + ("-defaults-" + _defaults_key(mode) if not options else "")
        rows.append(dict(cached(key, run)))
        print(f"{name}: {100 * rows[-1]['accuracy']:.2f} % ({rows[-1]['craft_seconds']} s)", flush=True)

    clean = rows[0]["accuracy"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"smalldata-{args.split}"
    result = {"split": args.split, "victim": victim, "epochs": args.epochs, "train_rows": len(train),
              "evaluation_rows": len(evaluation), "rows_per_class": {"train": TRAIN_ROWS, "val": VAL_ROWS},
              "library_version": __version__, "python": platform.python_version(), "rows": rows}
    previous = out / f"{stem}.json"
    if previous.exists():        # keep candidates measured by earlier runs of the same setting
        old = json.loads(previous.read_text())
        if (old.get("victim"), old.get("epochs")) == (victim, args.epochs):
            names = {r["candidate"] for r in rows}
            rows.extend(r for r in old["rows"] if r["candidate"] not in names)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2))
    lines = [f"# Small data: em on 2,000 CIFAR-10 rows ({args.split} split)", "",
             f"Victim {arch} width {victim['width']}, {args.epochs} epochs, seed 0; {len(train)} train rows "
             f"(rows {TRAIN_ROWS[0]}-{TRAIN_ROWS[1] - 1} of each class), {len(evaluation)} "
             f"{'validation rows (train rows 4400-4499 of each class)' if args.split == 'val' else 'test rows'}. "
             "Bar: at most half the clean accuracy.", "",
             "| training set | options | victim accuracy | vs half clean | craft + apply s | rounds |", "|---|---|---|---|---|---|"]
    for r in rows:
        bar = "" if r["candidate"] == "clean" else ("meets" if r["accuracy"] <= clean / 2 else "misses")
        lines.append(f"| {r['candidate']} | `{json.dumps(r.get('options', {}))}` | {100 * r['accuracy']:.2f} % | {bar} | "
                     f"{r.get('craft_seconds', '')} | {r.get('rounds', '')} |")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def _defaults_key(mode: str) -> str:
    """A short digest of em's resolved default config for `mode` (a changed default is a new measurement)."""
    import hashlib

    from hf_unlearnable.methods.em import EMConfig

    cfg = EMConfig.from_options("em", mode=mode).to_dict()
    return hashlib.blake2b(json.dumps(cfg, sort_keys=True).encode(), digest_size=4).hexdigest()


if __name__ == "__main__":
    sys.exit(main())
