"""Probe: class-wise em on mixed-size images, victim at 32 x 32 (why `anydata.md`'s em-classwise row fails at 32).

2,000 rows (the first 200 of each class) of the anydata image folder (runs/anydata/data, built by anydata.py:
CIFAR-10 upscaled bicubic to random sizes 48-256, JPEG q90) crafted with `craft(ds, "em", **options)` for each
option set given as JSON, applied with `protect(noise=...)`, and one ConvNet victim (`evaluate`, 15 epochs, working
resolution 32) scored on the folder's 2,000 test rows. "clean" trains on the rows unprotected. Prints one line per
option set (victim accuracy, rounds, mean |noise| in 1/255 steps, seconds).

    python benchmarks/anydata_probe.py clean '{"mode": "classwise"}' '{"mode": "classwise", "min_iters": 30}'
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def main(argv=None) -> int:
    import datasets

    from hf_unlearnable import craft, evaluate, protect

    specs = (argv if argv is not None else sys.argv[1:]) or ["clean", '{"mode": "classwise"}']
    datasets.disable_progress_bars()
    train = datasets.load_dataset("imagefolder", data_dir="runs/anydata/data", split="train")
    test = datasets.load_dataset("imagefolder", data_dir="runs/anydata/data", split="test")
    labels = np.asarray(train["label"])
    train = train.select(np.sort(np.concatenate([np.flatnonzero(labels == k)[:200] for k in range(10)])))
    train = train.flatten_indices()
    for spec in specs:
        t0 = time.perf_counter()
        if spec == "clean":
            protected, info = train, ""
        else:
            options = json.loads(spec)
            noise = craft(train, "em", **options)
            protected = train.map(protect(noise=noise), batched=True)
            info = (f" rounds {noise.config.stats['rounds']} |noise| "
                    f"{np.abs(noise.steps.astype(int)).mean():.2f}/255")
        acc = evaluate(protected, test, epochs=15, progress=False).accuracy("protected", 1.0)
        print(f"{spec}: victim {100 * acc:.2f} %{info} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
