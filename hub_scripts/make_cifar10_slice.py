"""Build the CIFAR-10 slice bundled in the package (hf_unlearnable/data/cifar10_slice/).

Source: the pixel-exact CIFAR-10 originals (a folder of train/test Parquet files in the Hub's `cifar10` schema,
PNG images). Train: the first `--per-class` rows of every class in the original order; test: the first
`--test` rows. Usage: python hub_scripts/make_cifar10_slice.py ../shared/data/cifar10-exact
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


OUT = Path(__file__).resolve().parents[1] / "hf_unlearnable" / "data" / "cifar10_slice"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", help="folder with train.parquet and test.parquet (pixel-exact CIFAR-10)")
    ap.add_argument("--per-class", type=int, default=200, help="train rows per class (default 200 -> 2,000)")
    ap.add_argument("--test", type=int, default=1000, help="test rows (default 1,000, or all there are)")
    args = ap.parse_args(argv)
    import datasets

    from hf_unlearnable.data import per_class_rows

    src = Path(args.source)
    ds = datasets.load_dataset("parquet", data_files={"train": str(src / "train.parquet"),
                                                      "test": str(src / "test.parquet")})
    keep = per_class_rows(ds["train"]["label"], 0, args.per_class)
    train = ds["train"].select(keep)
    test = ds["test"].select(range(min(args.test, len(ds["test"]))))
    OUT.mkdir(parents=True, exist_ok=True)
    train.to_parquet(str(OUT / "train.parquet"))
    test.to_parquet(str(OUT / "test.parquet"))
    (OUT / "README.md").write_text(
        "# CIFAR-10 slice (bundled)\n\n"
        f"{len(train)} train rows ({args.per_class} per class: the first of each class in data_batch order) and "
        f"{len(test)} test rows (the first of test_batch), pixel-exact original CIFAR-10 images as PNG, in the "
        "schema of the Hub's `cifar10` (`img`: Image, `label`: ClassLabel).\n"
        "Built by hub_scripts/make_cifar10_slice.py. CIFAR-10: Krizhevsky, Learning Multiple Layers of Features "
        "from Tiny Images, 2009.\n")
    print(f"wrote {len(train)} train / {len(test)} test rows to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
