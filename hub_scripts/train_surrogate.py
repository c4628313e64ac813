"""Train the bundled default surrogate (hf_unlearnable/surrogates/default/) on the CIFAR-10 train set.

    python hub_scripts/train_surrogate.py --data ../shared/data/cifar10 --epochs 12

--data: a folder with train.parquet/test.parquet in the Hub's cifar10 schema, "hub" for the Hub's cifar10, or
"bundled" for the package's small slice (for a quick check only). Writes config.json + model.safetensors and
records the clean test accuracy in the config.

A slightly robust surrogate (fast adversarial training at a small radius) on rows of every class that the mixing
benchmark never uses (its train, validation and transfer rows are the first 2,200 of each class):

    python hub_scripts/train_surrogate.py --data ../shared/data/cifar10 --class-rows 2200:4200 --epochs 8 \
        --adversarial-epsilon 2 --out runs/surrogates/robust2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

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

    from hf_unlearnable._data import load_labelled
    from hf_unlearnable.data import load_cifar10, per_class_rows
    from hf_unlearnable.surrogates import Surrogate, SurrogateConfig
    from hf_unlearnable.training import TrainConfig, accuracy, fit

    train_ds = load_cifar10("train", args.data)
    if args.class_rows:
        try:
            start, stop = (int(v) for v in args.class_rows.split(":"))
        except ValueError:
            ap.error(f"--class-rows {args.class_rows!r}: expected START:STOP, e.g. 2200:4200")
        train_ds = train_ds.select(per_class_rows(train_ds["label"], start, stop))
    train = load_labelled(train_ds)
    test = load_labelled(load_cifar10("test", args.data))
    tcfg = TrainConfig(epochs=args.epochs, adversarial_epsilon=args.adversarial_epsilon / 255,
                       adversarial_steps=args.adversarial_steps)
    sur = Surrogate(SurrogateConfig(arch=args.arch, width=args.width, num_classes=train.num_classes,
                                    class_names=train.class_names, image_size=list(train.images.shape[1:3])))
    x = torch.from_numpy(train.images).permute(0, 3, 1, 2).contiguous()
    t0 = time.perf_counter()
    hist = fit(sur.model, x, torch.from_numpy(train.labels), tcfg, seed=args.seed, desc="surrogate")
    xt = torch.from_numpy(test.images).permute(0, 3, 1, 2).contiguous()
    acc = accuracy(sur.model, xt, torch.from_numpy(test.labels))
    sur.config.training = {"data": args.data if args.data in ("hub", "bundled") else "cifar10 (JPEG q75 copy, "
                           "50,000 train images, original order)", "train_rows": len(train),
                           "class_rows": args.class_rows,
                           "test_accuracy": round(acc, 4), "seconds": round(time.perf_counter() - t0, 1),
                           "seed": args.seed, **tcfg.to_dict()}
    sur.save_pretrained(args.out)
    print(f"surrogate: test accuracy {acc:.4f} after {args.epochs} epochs ({hist['seconds']:.0f} s) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
