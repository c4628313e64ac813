"""Fine-tune mixing (issue: bayes): the BEO authors' second mixing protocol (methods.md §1.6, `cifar10-ft.py`).

A victim is trained on the (1 - r) clean rows (that is the clean-only control of `benchmarks/mixing.py`), then
fine-tuned for a few epochs on the other r rows: once on their protected twins, once on the same rows clean. A
protection that works makes the fine-tuned victim worse than the control; the clean fine-tune says what the rows
would have been worth. The rows, splits, victim and mix choice (`evaluate.mix_rows`) are those of mixing.py, and
the protected sets are mixing.py's crafted variants in --work (crafted there first when missing).

    python benchmarks/finetune.py --split val --epochs 10 --variants bayes-craft-defaults em-samplewise

Writes benchmarks/results/finetune[-val].json and .md.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mixing import VARIANTS, craft_variant, data_arguments, load_split, write_results  # noqa: E402


def main(argv=None) -> int:
    ap = data_arguments(__doc__)
    ap.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["bayes-craft-defaults", "em-samplewise"])
    ap.add_argument("--ratio", type=float, default=0.5, help="share r of rows in the fine-tuning part")
    ap.add_argument("--epochs", type=int, default=20, help="epochs on the clean part (the control)")
    ap.add_argument("--ft-epochs", type=int, default=5, help="fine-tuning epochs (the BEO code: 5)")
    ap.add_argument("--ft-lr", type=float, nargs="+", default=[0.01, 0.001],
                    help="peak learning rates of the fine-tune (cosine decay to 0; the victim's own peak is 0.1)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the crafted sets (as mixing.py)")
    ap.add_argument("--victim-seed", type=int, default=None, help="seed of the victims and the mix rows (default --seed)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench-efficacy"))
    args = ap.parse_args(argv)

    import datasets

    from hf_unlearnable import __version__
    from hf_unlearnable._data import load_labelled
    from hf_unlearnable.evaluate import VictimConfig, _aligned, mix_rows
    from hf_unlearnable.surrogates.nets import build
    from hf_unlearnable.training import TrainConfig, accuracy, fit, nchw

    victim_seed = args.seed if args.victim_seed is None else args.victim_seed
    train, evaluation = load_split(args.data, args.per_class, args.split, args.val_per_class, args.test or None)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    jobs = [craft_variant(name, VARIANTS, args, work) for name in args.variants]
    clean, test = load_labelled(train), load_labelled(evaluation)
    test_x, test_y = nchw(test.images), torch.from_numpy(test.labels)
    chosen = mix_rows(len(clean), args.ratio, victim_seed)
    victim = VictimConfig.auto(args.epochs)

    t0 = time.perf_counter()
    torch.manual_seed(victim_seed)
    control = build(victim.arch, clean.num_classes, victim.width)
    fit(control, nchw(clean.images[~chosen]), torch.from_numpy(clean.labels[~chosen]), victim.train,
        seed=victim_seed, desc="control (clean part)")
    control_acc = accuracy(control, test_x, test_y)
    parts = {"clean": clean.images[chosen]}
    for name in args.variants:
        protected = load_labelled(datasets.load_from_disk(str(work / name)))
        _aligned(protected, clean)    # the same rows in the same order, or a clear error
        parts[name] = protected.images[chosen]
    rows = []
    for lr in args.ft_lr:
        ft = TrainConfig(**{**victim.train.to_dict(), "epochs": args.ft_epochs, "lr": lr})
        for name, images in parts.items():
            model = copy.deepcopy(control)
            fit(model, nchw(images), torch.from_numpy(clean.labels[chosen]), ft, seed=victim_seed,
                desc=f"fine-tune on {name}, lr {lr}", schedule="cosine")
            acc = accuracy(model, test_x, test_y)
            rows.append({"fine_tuned_on": name, "lr": lr, "accuracy": acc, "minus_control": acc - control_acc})
            print(f"lr {lr}: fine-tuned on {name}: {100 * acc:.2f} % ({100 * (acc - control_acc):+.2f} pts)",
                  flush=True)
    result = {"benchmark": "finetune", "split": args.split, "train_rows": len(clean), "evaluation_rows": len(test),
              "ratio": args.ratio, "epochs": args.epochs, "ft_epochs": args.ft_epochs, "seed": args.seed,
              "victim_seed": victim_seed, "victim": victim.to_dict(), "control_accuracy": control_acc, "rows": rows,
              "crafting": [{k: j[k] for k in ("name", "options") if k in j} for j in jobs],
              "seconds": round(time.perf_counter() - t0, 1), "hf_unlearnable": __version__,
              "date": time.strftime("%Y-%m-%d")}
    tag = "finetune" + ("-val" if args.split == "val" else "") + (
        f"-v{victim_seed}" if victim_seed != args.seed else "")
    write_results(args.out, tag, result, to_markdown(result))
    return 0


def to_markdown(r: dict) -> str:
    split = "full CIFAR-10 test set" if r["split"] == "test" else f"validation split ({r['evaluation_rows']} rows)"
    lines = [f"# Fine-tune mixing ({r['date']}, hf_unlearnable {r['hf_unlearnable']})", "",
             f"{r['train_rows']} class-balanced CIFAR-10 train rows, accuracy on the {split}. Control: victim "
             f"{r['victim']['arch']} trained {r['epochs']} epochs on the {100 * (1 - r['ratio']):.0f} % clean part "
             f"alone: **{100 * r['control_accuracy']:.2f} %**. Then {r['ft_epochs']} epochs of fine-tuning (cosine "
             f"from the peak lr) on the other {100 * r['ratio']:.0f} % of rows, protected or clean. Victim seed "
             f"{r['victim_seed']}.", "",
             "| fine-tuned on | peak lr | accuracy | vs control |", "|---|---|---|---|"]
    for row in r["rows"]:
        lines.append(f"| {row['fine_tuned_on']} | {row['lr']:g} | {100 * row['accuracy']:.2f} % | "
                     f"{100 * row['minus_control']:+.2f} pts |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
