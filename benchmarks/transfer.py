"""Why does a mix of protected and clean rows still train well? Two measurements beside the mixing benchmark.

1. **Transfer.** A victim-architecture model trained on clean train rows *disjoint* from the benchmark's rows and from
   the validation rows (per class, the rows after them) classifies each crafted set of `benchmarks/mixing.py`
   (read from its --work folder). Reported: accuracy on the protected rows with their own labels, the share predicted
   as y+1 (the class the targeted term aims at), and the same for the crafting surrogate (white-box). A protected
   row that a fresh model still reads as its own class teaches a victim that class, whatever a surrogate says.
2. **Ceiling.** The r = 0.5 mix of the validation protocol where the "protected" half keeps its clean images but
   carries a wrong label: y+1 for every row, or a random other class. No bounded perturbation can look more like
   another class than that class's own images, so these bound what a poison that works by class confusion can do.

    python benchmarks/transfer.py                    # after mixing.py --split val (reuses its crafted sets)
    python benchmarks/transfer.py --per-class 50 --val-per-class 20 --epochs 1 --work /tmp/mix-smoke   # smoke

Writes benchmarks/results/transfer.json and transfer.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mixing import load_split, per_class_rows, write_results  # noqa: E402  (the same 10k rows and validation rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "cifar10"))
    ap.add_argument("--per-class", type=int, default=1000)
    ap.add_argument("--val-per-class", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=10, help="epochs of the fresh model and the ceiling victims")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench-efficacy"), help="mixing.py's --work folder")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)

    import datasets
    import torch
    from safetensors.torch import load_file, save_file

    from hf_unlearnable import __version__
    from hf_unlearnable._data import load_labelled
    from hf_unlearnable.data import load_cifar10
    from hf_unlearnable.evaluate import VictimConfig, mix_rows
    from hf_unlearnable.surrogates import load_surrogate
    from hf_unlearnable.surrogates.nets import build
    from hf_unlearnable.training import accuracy, fit, nchw, predict

    victim = VictimConfig.auto(args.epochs)
    train, val = load_split(args.data, args.per_class, "val", args.val_per_class, None)
    T, V = load_labelled(train), load_labelled(val)
    y = torch.from_numpy(T.labels)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    # 1. a fresh model on disjoint clean rows (cached: it depends only on the rows, epochs and seed)
    start = args.per_class + args.val_per_class
    fresh_file = work / f"transfer-fresh-{args.per_class}-{args.val_per_class}-e{args.epochs}-s{args.seed}.safetensors"
    fresh = build(victim.arch, T.num_classes, victim.width)
    if fresh_file.exists():
        fresh.load_state_dict(load_file(str(fresh_file)))
    else:
        full = load_cifar10("train", args.data)
        rows = per_class_rows(full["label"], start, start + args.per_class)
        F = load_labelled(full.select(rows), desc="Reading disjoint rows")
        torch.manual_seed(args.seed + 1)
        fresh = build(victim.arch, T.num_classes, victim.width)
        fit(fresh, nchw(F.images), torch.from_numpy(F.labels), victim.train, seed=args.seed + 1,
            desc="fresh model (disjoint clean rows)")
        save_file(fresh.state_dict(), str(fresh_file))
    surrogate = load_surrogate(None).eval()

    def read(images) -> dict:
        out = {}
        for tag, net in (("fresh", fresh), ("surrogate", surrogate)):
            p = predict(net, images)
            out[tag] = {"accuracy": float((p == y).float().mean()),
                        "pred_y_plus_1": float((p == (y + 1) % T.num_classes).float().mean())}
        return out

    sets = {"clean": read(nchw(T.images))}
    for folder in sorted(p for p in work.iterdir() if p.is_dir() and (p / "dataset_info.json").exists()):
        P = load_labelled(datasets.load_from_disk(str(folder)), desc=f"Reading {folder.name}")
        if len(P) != len(T) or not np.array_equal(P.labels, T.labels):
            continue   # crafted on other rows (another --per-class)
        sets[folder.name] = read(nchw(P.images))

    # 2. the ceiling: the r = 0.5 rows evaluate() would protect (same seed), relabelled
    n = len(T)
    chosen = mix_rows(n, 0.5, args.seed)
    other = (T.labels + np.random.default_rng(args.seed + 5).integers(1, T.num_classes, n)) % T.num_classes
    ceiling = {}
    for tag, wrong in (("y+1", (T.labels + 1) % T.num_classes), ("random other class", other)):
        labels = np.where(chosen, wrong, T.labels).astype(np.int64)
        torch.manual_seed(args.seed)
        net = build(victim.arch, T.num_classes, victim.width)
        fit(net, nchw(T.images), torch.from_numpy(labels), victim.train, seed=args.seed, desc=f"ceiling: {tag}")
        ceiling[tag] = accuracy(net, nchw(V.images), torch.from_numpy(V.labels))

    cache = work / f"mixing-val-e{args.epochs}-s{args.seed}" / "baselines.json"
    base = json.loads(cache.read_text()) if cache.exists() else {}
    result = {"benchmark": "transfer", "train_rows": n, "evaluation_rows": len(V), "epochs": args.epochs,
              "seed": args.seed, "victim": victim.to_dict(),
              "fresh_model_val_accuracy": accuracy(fresh, nchw(V.images), torch.from_numpy(V.labels)),
              "sets": sets, "ceiling_r05": ceiling,
              "control_r05": (base.get("0.5") or {}).get("test_accuracy"),
              "clean": (base.get("clean") or {}).get("test_accuracy"),
              "hf_unlearnable": __version__, "date": time.strftime("%Y-%m-%d")}
    write_results(args.out, "transfer", result, to_markdown(result))
    return 0


def to_markdown(r: dict) -> str:
    pct = lambda v: "–" if v is None else f"{100 * v:.2f} %"  # noqa: E731
    lines = [f"# Transfer and ceiling ({r['date']}, hf_unlearnable {r['hf_unlearnable']})", "",
             f"Fresh model: {r['victim']['arch']}, {r['epochs']} epochs, on {r['train_rows']} clean train rows "
             f"disjoint from the benchmark's rows and the validation rows; validation accuracy "
             f"{pct(r['fresh_model_val_accuracy'])}. Surrogate: the bundled default (white-box).", "",
             "| set | fresh model: accuracy | fresh: predicted y+1 | surrogate: accuracy | surrogate: predicted y+1 |",
             "|---|---|---|---|---|"]
    for name, s in r["sets"].items():
        lines.append(f"| {name} | {pct(s['fresh']['accuracy'])} | {pct(s['fresh']['pred_y_plus_1'])} | "
                     f"{pct(s['surrogate']['accuracy'])} | {pct(s['surrogate']['pred_y_plus_1'])} |")
    lines += ["", f"Ceiling, r = 0.5 on the validation protocol ({r['evaluation_rows']} held-out rows): the protected "
              "half keeps its clean images but carries a wrong label.", "",
              "| protected half | victim accuracy | mix − control |", "|---|---|---|"]
    ctrl = r.get("control_r05")
    for tag, acc in r["ceiling_r05"].items():
        gap = f"{100 * (acc - ctrl):+.2f} pts" if ctrl is not None else "–"
        lines.append(f"| clean images, label {tag} | {pct(acc)} | {gap} |")
    lines.append(f"| (clean-only control: the other half alone) | {pct(ctrl)} | |")
    lines.append(f"| (clean: all rows, right labels) | {pct(r.get('clean'))} | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
