"""Train (or take) a CIFAR-10 surrogate and publish it to a Hub model repo with its card.

    python hub_scripts/publish_surrogate.py --repo-id me/hf-unlearnable-surrogate --from-dir default
    python hub_scripts/publish_surrogate.py --repo-id me/convnet-cifar10 --data ../shared/data/cifar10 --epochs 8

--from-dir publishes a saved surrogate as it is ("default": the one bundled with the package, trained by
hub_scripts/train_surrogate.py); otherwise a fresh one is trained here and its clean test accuracy recorded in the
card. --rows / --test-rows / --epochs / --width make a small, fast run (the tests use them against a loopback Hub).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _publish import add_hub_options, apply_endpoint, balanced_subset, data_description, push  # noqa: E402

SOURCE_ID = "uoft-cs/cifar10"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from-dir", default=None, help="publish this saved surrogate ('default' = the bundled one)")
    ap.add_argument("--data", default="bundled", help="'bundled', 'hub', or a folder with train/test.parquet")
    ap.add_argument("--rows", type=int, default=None, help="class-balanced train subset (default all)")
    ap.add_argument("--test-rows", type=int, default=None, help="test subset for the recorded accuracy")
    ap.add_argument("--arch", default="convnet")
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    add_hub_options(ap)
    args = ap.parse_args(argv)
    apply_endpoint(args)

    from hf_unlearnable.surrogates import DEFAULT_DIR, Surrogate

    if args.from_dir:
        sur = Surrogate.from_pretrained(DEFAULT_DIR if args.from_dir == "default" else args.from_dir)
        sur.config.training.setdefault("dataset_id", SOURCE_ID)
    else:
        from hf_unlearnable import train_surrogate
        from hf_unlearnable.data import load_cifar10

        train = balanced_subset(load_cifar10("train", args.data), args.rows, args.seed)
        test = balanced_subset(load_cifar10("test", args.data), args.test_rows, args.seed)
        sur = train_surrogate(train, arch=args.arch, width=args.width, epochs=args.epochs, seed=args.seed, test=test)
        sur.config.training.update({"data": data_description(args.data, len(train)), "dataset_id": SOURCE_ID})
    commit = push(sur, args, f"{sur.config.arch} CIFAR-10 surrogate")
    print(f"published {sur.config.arch} surrogate -> {commit.commit_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
