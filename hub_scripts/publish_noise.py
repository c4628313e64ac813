"""Craft a CIFAR-10 class-wise noise bank (EM or PUE) and publish it to a Hub model repo with its card.

    python hub_scripts/publish_noise.py --method em  --repo-id me/em-cifar10-classwise --data ../shared/data/cifar10
    python hub_scripts/publish_noise.py --method pue --repo-id me/pue-cifar10 --data ../shared/data/cifar10

The repo gets config.json + noise.safetensors + README.md (model_cards/noise_card.md). Anyone can then run
`protect(noise=load_noise("me/em-cifar10-classwise"))`. --rows and --option make a small, fast run (the tests
publish to a loopback Hub in seconds); the defaults are the method's paper defaults on the data given.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _publish import add_hub_options, apply_endpoint, balanced_subset, data_description, push  # noqa: E402

SOURCE_ID = "uoft-cs/cifar10"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", choices=["em", "pue"], default="em")
    ap.add_argument("--data", default="bundled", help="'bundled', 'hub', or a folder with train.parquet")
    ap.add_argument("--rows", type=int, default=None, help="class-balanced subset of the train split (default all)")
    ap.add_argument("--epsilon", type=float, default=8 / 255)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="crafting option (JSON value), repeatable, e.g. --option max_iters=1")
    ap.add_argument("--checkpoint-dir", default=None, help="resume crafting from here")
    ap.add_argument("--save-dir", default=None, help="also keep a local copy of the noise here")
    add_hub_options(ap)
    args = ap.parse_args(argv)
    apply_endpoint(args)

    import json

    from hf_unlearnable import craft
    from hf_unlearnable.data import load_cifar10

    options = {}
    for item in args.option:
        key, _, value = item.partition("=")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    if args.method == "em":
        options.setdefault("mode", "classwise")
        if options["mode"] != "classwise":
            raise SystemExit("error: a published noise bank is class-wise (--option mode=classwise).")
    train = balanced_subset(load_cifar10("train", args.data), args.rows, args.seed)
    t0 = time.perf_counter()
    noise = craft(train, args.method, epsilon=args.epsilon, seed=args.seed, checkpoint_dir=args.checkpoint_dir,
                  **options)
    noise.config.source.update(dataset_id=SOURCE_ID, data=data_description(args.data, train.num_rows))
    noise.config.stats["craft_seconds"] = round(time.perf_counter() - t0, 1)
    if args.save_dir:
        noise.save_pretrained(args.save_dir)
    commit = push(noise, args, f"{args.method} class-wise CIFAR-10 noise, eps {noise.config.epsilon_255}")
    print(f"published {noise!r} -> {commit.commit_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
