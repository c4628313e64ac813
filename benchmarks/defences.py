"""Defences benchmark: does a protection survive what a victim can do against it?

For each method (a crafted set of the 10k CPU protocol, shared with benchmarks/mixing.py and efficacy.py through
--work) and each defence of `evaluate` (none, grayscale, JPEG quality 10, fast adversarial training at 8/255), a
victim trains on the fully protected rows (r = 1.0), beside a victim on the clean rows under the same defence. The
defences are final numbers, nothing is tuned on them, so the default evaluation set is the full test set.

    python benchmarks/defences.py       # 10k train, test set, 10-epoch victims (~1.5 h on 2 cores, 55 min crafting)
    python benchmarks/defences.py --per-class 50 --test 500 --epochs 1 --variants em-classwise --work /tmp/def-smoke

Writes benchmarks/results/defences.json and .md; finished victims are cached in --work, so a run resumes.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mixing import VARIANTS, craft_variant, data_arguments, load_split, write_results  # noqa: E402  (the same rows, crafted sets)

# the efficacy benchmark's EM class-wise job (same options, so --work folders are shared) and PUE's robust
# class-wise noise with the certify benchmark's 10 rounds
METHODS = {**VARIANTS, "em-classwise": ("em", "craft", {"mode": "classwise", "min_iters": 10, "max_iters": 15}),
           "pue": ("pue", "craft", {"min_iters": 10, "max_iters": 10})}
DEFAULT_METHODS = ["em-classwise", "bayes-craft-augment-anchors-targeted-long", "bayes-craft-nearest-targeted8",
                   "em-samplewise", "pue"]
DEFENCES = ["none", "grayscale", "jpeg", "adversarial"]


def main(argv=None) -> int:
    ap = data_arguments(__doc__)
    ap.add_argument("--variants", nargs="+", choices=sorted(METHODS), default=DEFAULT_METHODS)
    ap.add_argument("--defences", nargs="+", choices=DEFENCES, default=DEFENCES)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench-efficacy"),
                    help="folder of crafted sets (shared with efficacy.py and mixing.py) and cached victims")
    args = ap.parse_args(argv)

    import datasets

    from hf_unlearnable import __version__, evaluate
    from hf_unlearnable.evaluate import VictimConfig

    victim = VictimConfig.auto(args.epochs)
    train, evaluation = load_split(args.data, args.per_class, args.split, args.val_per_class, args.test or None)
    work = Path(args.work)
    cache = work / f"defences-{args.split}-e{args.epochs}-s{args.seed}"
    cache.mkdir(parents=True, exist_ok=True)

    # the clean victims depend only on the rows, the defence and the seed: one cache for all methods, filled by
    # whichever method's run first needs a defence's clean victim
    clean_file = cache / "clean.json"
    clean = json.loads(clean_file.read_text()) if clean_file.exists() else {}

    def victims(name: str, protected) -> dict:
        """{defence: accuracy} of the victims on one method's protected rows, trained once per defence and cached."""
        part = cache / f"{name}.json"
        done = json.loads(part.read_text()) if part.exists() else {}
        for d in args.defences:
            if d in done and d in clean:
                continue
            rep = evaluate(protected, evaluation, clean=train, mix=[1.0], defences=[d], victim=victim,
                           seed=args.seed, baselines=d not in clean)
            for row in rep.rows:
                (clean if row["train_set"] == "clean" else done)[d] = row["test_accuracy"]
            part.write_text(json.dumps(done, indent=1))
            clean_file.write_text(json.dumps(clean, indent=1))
        return done

    jobs, table = [], {}
    for name in args.variants:
        jobs.append(craft_variant(name, METHODS, args, work))
        table[name] = victims(name, datasets.load_from_disk(str(work / name)))

    result = {"benchmark": "defences", "split": args.split, "evaluation_rows": len(evaluation),
              "train_rows": len(train), "epochs": args.epochs, "seed": args.seed, "victim": victim.to_dict(),
              "defences": args.defences, "clean": {d: clean[d] for d in args.defences},
              "protected": {name: {d: table[name][d] for d in args.defences} for name in args.variants},
              "crafting": [{k: j[k] for k in ("name", "method", "how", "options") if k in j} for j in jobs],
              "hf_unlearnable": __version__, "date": time.strftime("%Y-%m-%d")}
    write_results(args.out, "defences" + ("-val" if args.split == "val" else ""), result, to_markdown(result))
    return 0


def to_markdown(r: dict) -> str:
    split = (f"CIFAR-10 test set ({r['evaluation_rows']} rows)" if r["split"] == "test"
             else f"validation split ({r['evaluation_rows']} held-out train rows)")
    ds = r["defences"]
    lines = [f"# Defences benchmark ({r['date']}, hf_unlearnable {r['hf_unlearnable']})", "",
             f"{r['train_rows']} class-balanced CIFAR-10 train rows (JPEG copy), 100 % protected; accuracy on the "
             f"{split}; victim {r['victim']['arch']} {r['epochs']} epochs, crop+flip, seed {r['seed']}. A defence is "
             "applied by the victim to its training and test inputs (grayscale, JPEG quality 10) or changes its "
             "training (adversarial: fast adversarial training at 8/255). Lower is a stronger protection; the clean "
             "row is what the defence leaves a victim on unprotected data.", "",
             "| trained on | " + " | ".join(ds) + " |", "|---|" + "---|" * len(ds),
             "| clean rows | " + " | ".join(f"{100 * r['clean'][d]:.2f} %" for d in ds) + " |"]
    for name, accs in r["protected"].items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * accs[d]:.2f} %" for d in ds) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
