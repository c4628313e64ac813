"""Train the bundled default surrogate (hf_unlearnable/surrogates/default/) on the CIFAR-10 train set.

    python hub_scripts/train_surrogate.py --data ../shared/data/cifar10 --epochs 12

--data: a folder with train.parquet/test.parquet in the Hub's cifar10 schema, "hub" for the Hub's cifar10, or
"bundled" for the package's small slice (for a quick check only). Writes config.json + model.safetensors and
records the clean test accuracy in the config. The training is hf_unlearnable.train_surrogate (the public way to
make a surrogate for your own classes; also `hf-unlearnable train-surrogate`).

A slightly robust surrogate (fast adversarial training at a small radius) on rows of every class that the mixing
benchmark never uses (its train, validation and transfer rows are the first 2,200 of each class):

    python hub_scripts/train_surrogate.py --data ../shared/data/cifar10 --class-rows 2200:4200 --epochs 8 \
        --adversarial-epsilon 2 --out runs/surrogates/robust2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "hf_unlearnable" / "surrogates" / "default"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="hub", help="Parquet folder, 'hub' or 'bundled' (default: hub)")
    ap.add_argument("--arch", default="convnet")
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--class-rows", default=None, metavar="START:STOP",
                    help="train on the START..STOP-1-th rows of every class only (default: all rows)")
    ap.add_argument("--adversarial-epsilon", type=float, default=0.0, metavar="K",
                    help="adversarial training at L_inf radius K/255 (default 0: standard training)")
    ap.add_argument("--adversarial-steps", type=int, default=1, help="1 = FGSM from a random start; n = PGD-n")
    ap.add_argument("--out", default=str(OUT), help=f"output directory (default {OUT})")
    args = ap.parse_args(argv)

    from hf_unlearnable import ProtectionError, train_surrogate
    from hf_unlearnable.data import load_cifar10, per_class_rows

    train_ds = load_cifar10("train", args.data)
    if args.class_rows:
        try:
            start, stop = (int(v) for v in args.class_rows.split(":"))
        except ValueError:
            ap.error(f"--class-rows {args.class_rows!r}: expected START:STOP, e.g. 2200:4200")
        train_ds = train_ds.select(per_class_rows(train_ds["label"], start, stop))
    try:
        sur = train_surrogate(train_ds, arch=args.arch, width=args.width, epochs=args.epochs, seed=args.seed,
                              test=load_cifar10("test", args.data), adversarial_epsilon=args.adversarial_epsilon / 255,
                              adversarial_steps=args.adversarial_steps)
    except ProtectionError as exc:
        ap.error(str(exc))
    t = sur.config.training
    t["data"] = (args.data if args.data in ("hub", "bundled")
                 else "cifar10 (JPEG q75 copy, 50,000 train images, original order)")
    t["class_rows"] = args.class_rows
    sur.save_pretrained(args.out)
    print(f"surrogate: test accuracy {t['test_accuracy']:.4f} after {args.epochs} epochs ({t['seconds']:.0f} s) "
          f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
