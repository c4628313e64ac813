"""`hf-unlearnable demo`: protect the bundled CIFAR-10 slice four ways, train the same victim on each, one table."""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .._atomic import write_text_atomic
from ._common import SOURCES_HELP, add_verbosity, load_source, parse_epsilon, parse_options, positive_int

logger = logging.getLogger("hf_unlearnable.cli")

# The demo's EM options, chosen to fit a 2-core CPU (measured on the bundled 2,000 images; see README):
# - class-wise: surrogate batch 64 and 20 rounds (paper: 512, at least 10). The class noise itself gets about 20
#   updates per round on any data size (EMConfig.noise_batch_size's class-wise default); before that default, batch
#   512 gave a 400-row subset ONE update per round and the noise did nothing (victim 54.8 % vs 55.7 % clean).
# - sample-wise: 5 PGD steps of 1.6/255 (the same 8/255 reach as the paper's 20 x 0.8/255) at a quarter of the cost,
#   for the paper's 10 rounds.
DEMO_CLASSWISE = {"mode": "classwise", "batch_size": 64, "min_iters": 20, "max_iters": 20}
DEMO_SAMPLEWISE = {"mode": "samplewise", "steps": 5, "step_size": 1.6 / 255, "min_iters": 10, "max_iters": 10}
# bayes runs craft's defaults (20 passes with augmentation draws, clean anchors and the targeted term)
DEMO_BAYES: dict = {}


def register(sub) -> None:
    p = sub.add_parser(
        "demo", help="protect the bundled CIFAR-10 slice four ways, train a victim on each, print one table",
        description="End to end on CPU in a few minutes: protect the training data with random noise (per batch), "
                    "class-wise EM, sample-wise EM (both crafted with the min-min) and bayes (Bayes-error "
                    "optimisation over the whole set), each crafted noise applied with protect(noise=...); train "
                    "the same victim on each and on the clean data, and print one table (method, how applied, "
                    "seconds, images/s, victim test accuracy). The table is also written as demo.json and demo.md "
                    "into --output-dir.")
    p.add_argument("--data", default="bundled", metavar="SRC",
                   help=f"source of the train and test splits: {SOURCES_HELP}. Default: bundled.")
    p.add_argument("--max-train", type=positive_int, default=2000, metavar="N",
                   help="use at most the first N training rows. Default: 2000 (all of the bundled slice).")
    p.add_argument("--max-test", type=positive_int, default=2000, metavar="N",
                   help="use at most the first N test rows. Default: 2000 (the bundled slice has 932).")
    p.add_argument("--epochs", type=positive_int, default=15, metavar="N", help="victim epochs. Default: 15.")
    p.add_argument("--epsilon", type=parse_epsilon, default=8 / 255, help="L-inf budget. Default: 8/255.")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise and of every victim. Default: 0.")
    p.add_argument("--classwise-option", action="append", default=[], metavar="KEY=VALUE",
                   help="override a class-wise EM crafting option, repeatable. The demo's: "
                        f"{_options_text(DEMO_CLASSWISE)} (paper: batch_size=512, at least 10 rounds).")
    p.add_argument("--samplewise-option", action="append", default=[], metavar="KEY=VALUE",
                   help="override a sample-wise EM crafting option, repeatable. The demo's: "
                        f"{_options_text(DEMO_SAMPLEWISE)} (paper: steps=20, step_size=0.8/255, at least 10 "
                        "rounds).")
    p.add_argument("--bayes-option", action="append", default=[], metavar="KEY=VALUE",
                   help="override a bayes crafting option, repeatable (e.g. passes=10). The demo's: craft's "
                        "defaults.")
    p.add_argument("--output-dir", default="runs/demo", metavar="DIR",
                   help="where demo.json and demo.md go. Default: runs/demo.")
    add_verbosity(p)
    p.set_defaults(func=run)


def _timed_map(ds, transform):
    t0 = time.perf_counter()
    out = ds.map(transform, batched=True, with_indices=True, batch_size=256, keep_in_memory=True,
                 load_from_cache_file=False, desc="Protecting")
    return out, time.perf_counter() - t0


def _options_text(options: dict) -> str:
    """{'steps': 5, 'step_size': 0.00627} -> 'steps=5, step_size=1.6/255' (mode left out)."""
    parts = []
    for k, v in options.items():
        if k == "mode":
            continue
        if isinstance(v, float) and 0 < v < 1 and abs(v * 255 * 10 - round(v * 255 * 10)) < 1e-6:
            v = f"{v * 255:g}/255"
        parts.append(f"{k}={v}")
    return ", ".join(parts)


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _demo_markdown(rows: list[dict], meta: dict) -> str:
    lines = ["| method | how applied | crafting seconds | images/s | victim test accuracy |",
             "|---|---|---|---|---|"]
    for r in rows:
        secs = "–" if r["seconds"] is None else f"{r['seconds']:.1f}"
        ips = "–" if r["images_per_second"] is None else f"{r['images_per_second']:,.0f}"
        lines.append(f"| {r['method']} | {r['how']} | {secs} | {ips} | {100 * r['test_accuracy']:.1f} % |")
    v = meta["victim"]
    lines += [
        "",
        f"Data: {meta['data']}, {meta['n_train']} train / {meta['n_test']} test images; epsilon "
        f"{meta['epsilon_255']} (L-inf, checked after uint8 rounding); seed {meta['seed']}.",
        f"Victim (the same for every row, via evaluate()): {v['arch']}, {v['train']['epochs']} epochs, batch "
        f"{v['train']['batch_size']}, {'crop+flip' if v['train']['augment'] else 'no augmentation'}; device "
        f"{meta['device']}.",
        "Crafting seconds = craft() (if any) + the Dataset.map(protect(...)) pass, wall clock; images/s = train "
        "images / crafting seconds.",
        f"EM crafting options: class-wise {_options_text(meta['em_classwise'])} (paper: batch_size=512, at least "
        "10 rounds; the class noise gets about 20 updates per round either way: noise_batch_size); sample-wise "
        f"{_options_text(meta['em_samplewise'])} (paper: steps=20, step_size=0.8/255, at least 10 rounds: the same "
        "8/255 reach per round at a quarter of the cost). Everything else: the paper's defaults (EMConfig).",
        "EM noise as released (uint8 steps): class-wise mean |delta| "
        f"{meta['em_classwise_stats']['mean_abs_steps']:.2f}/255 after {meta['em_classwise_stats'].get('rounds')} "
        f"rounds (final surrogate error {_fmt(meta['em_classwise_stats'].get('final_error'))}); sample-wise mean "
        f"|delta| {meta['em_samplewise_stats']['mean_abs_steps']:.2f}/255 after "
        f"{meta['em_samplewise_stats'].get('rounds')} rounds (final surrogate error "
        f"{_fmt(meta['em_samplewise_stats'].get('final_error'))}).",
        f"bayes crafting options: {_options_text(meta['bayes']) or 'the defaults'} "
        f"({meta['bayes_stats'].get('passes')} passes); whole-set Bayes-error estimate "
        f"{_fmt(meta['bayes_stats'].get('bayes_error_before'))} -> {_fmt(meta['bayes_stats'].get('bayes_error_after'))}"
        f"; noise as released: mean |delta| {meta['bayes_stats']['mean_abs_steps']:.2f}/255.",
        f"Total demo wall time: {meta['wall_seconds']:.0f} s.",
    ]
    return "\n".join(lines)


def _noise_stats(noise) -> dict:
    """Crafting statistics (rounds, final surrogate error) and the size of the stored noise in uint8 steps."""
    import numpy as np

    steps = np.abs(noise.steps.astype(np.int16))
    out = {k: v for k, v in noise.config.stats.items() if k != "history"}
    out.update({"mean_abs_steps": round(float(steps.mean()), 3), "max_abs_steps": int(steps.max(initial=0)),
                "share_of_zero_steps": round(float((steps == 0).mean()), 3)})
    return out


@dataclass(frozen=True)
class _Protection:
    """One protected row of the demo's table."""
    name: str                     # the table's method column
    how: str                      # its "how applied" column; {sep}{options} get the crafting options
    note: str                     # logged before the row runs
    method: str
    options: dict | None = None   # None: protect(method=...) per batch; else craft(train, method, **options)


def run(args: argparse.Namespace) -> int:
    from .. import craft, evaluate, protect
    from ..evaluate import VictimConfig
    from ..training import device

    t_start = time.perf_counter()
    eps = protect(method="random", epsilon=args.epsilon, seed=args.seed).epsilon   # checked before any work
    sw_options = {**DEMO_SAMPLEWISE, **parse_options(args.samplewise_option), "mode": "samplewise"}
    cw_options = {**DEMO_CLASSWISE, **parse_options(args.classwise_option), "mode": "classwise"}
    bayes_options = {**DEMO_BAYES, **parse_options(args.bayes_option)}
    protections = [
        _Protection("random", 'per batch: ds.map(protect(method="random"))', "random noise, per batch", "random"),
        _Protection("EM class-wise", 'craft(ds, "em", mode="classwise"{sep}{options}) + protect(noise=...)',
                    "class-wise EM: craft (min-min) + protect(noise=...)", "em", cw_options),
        _Protection("EM sample-wise", 'craft(ds, "em", mode="samplewise"{sep}{options}) + protect(noise=...)',
                    "sample-wise EM: craft (min-min) + protect(noise=...)", "em", sw_options),
        _Protection("bayes", 'craft(ds, "bayes"{sep}{options}) + protect(noise=...)',
                    "bayes: craft (Bayes-error ascent over the whole set) + protect(noise=...)", "bayes",
                    bayes_options),
    ]
    out_dir = Path(os.path.expanduser(args.output_dir))
    train = load_source(args.data, "train")
    test = load_source(args.data, "test")
    if len(train) > args.max_train:
        train = train.select(range(args.max_train))
    if len(test) > args.max_test:
        test = test.select(range(args.max_test))
    n = len(train)
    victim = VictimConfig.auto(args.epochs)
    progress = args.quiet == 0
    rows: list[dict] = []
    reports: dict[str, dict] = {}

    def add(method: str, how: str, seconds: float | None, data) -> None:
        logger.info("training the victim on %s data", method)
        report = evaluate(data, test, mix=[1.0], victim=victim, seed=args.seed, progress=progress)
        acc = report.accuracy("protected")
        rows.append({"method": method, "how": how, "seconds": None if seconds is None else round(seconds, 2),
                     "images_per_second": None if seconds is None else round(n / max(seconds, 1e-9), 1),
                     "test_accuracy": acc})
        reports[method] = report.to_dict()
        logger.info("%s: victim test accuracy %.2f %%", method, 100 * acc)

    add("clean", "no protection", None, train)
    noises = {}
    for row in protections:
        logger.info(row.note)
        crafting = 0.0
        if row.options is None:
            transform = protect(method=row.method, epsilon=eps, seed=args.seed)
        else:
            t0 = time.perf_counter()
            noises[row.name] = craft(train, row.method, epsilon=eps, seed=args.seed, **row.options)
            crafting = time.perf_counter() - t0
            transform = protect(noise=noises[row.name])
        protected, secs = _timed_map(train, transform)
        text = _options_text(row.options or {})
        add(row.name, row.how.format(sep=", " if text else "", options=text), crafting + secs, protected)

    meta = {"data": args.data, "n_train": n, "n_test": len(test), "epsilon": eps,
            "epsilon_255": noises["EM class-wise"].config.epsilon_255, "seed": args.seed, "victim": victim.to_dict(),
            "device": str(device()), "em_classwise": cw_options, "em_samplewise": sw_options,
            "em_classwise_stats": _noise_stats(noises["EM class-wise"]),
            "em_samplewise_stats": _noise_stats(noises["EM sample-wise"]),
            "bayes": bayes_options, "bayes_stats": _noise_stats(noises["bayes"]),
            "wall_seconds": round(time.perf_counter() - t_start, 1)}
    md = _demo_markdown(rows, meta)
    print(md)
    write_text_atomic(str(out_dir / "demo.json"), json.dumps({"rows": rows, **meta, "reports": reports}, indent=2))
    write_text_atomic(str(out_dir / "demo.md"), md)
    logger.info("wrote %s and %s", out_dir / "demo.json", out_dir / "demo.md")
    return 0
