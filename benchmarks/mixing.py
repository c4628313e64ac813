"""Mixing benchmark (issue: bayes): victim accuracy against the share r of protected rows, each beside its
clean-only control (the (1 - r) clean rows alone), on the foundation's 10k CPU protocol.

Data: the class-balanced 10k CIFAR-10 train subset of benchmarks/efficacy.py (first 1,000 rows of each class), and
either the full test set (`--split test`, final numbers) or a validation split carved out of train (`--split val`:
the next `--val-per-class` rows of each class, never used for training; choose hyper-parameters here, the test set
is only for final numbers). Victim: the same `evaluate` victim as the foundation benchmark.

Methods ("variants", crafting in their own process; finished jobs in --work are reused, so an interrupted run
resumes and the sample-wise EM set of the efficacy benchmark is shared when --work is the same folder):

    python benchmarks/mixing.py --split val --variants bayes-batch bayes-batch-targeted --ratios 0.5   # tuning
    python benchmarks/mixing.py --split test                                                         # final
    python benchmarks/mixing.py --split val --no-augment --epochs 10                                 # §1.6 victims
    python benchmarks/mixing.py --per-class 50 --val-per-class 20 --epochs 1 --variants bayes-batch --split val \\
        --work /tmp/mix-smoke                                                                        # smoke run

Writes benchmarks/results/mixing[-val].json, .md and .png (accuracy against r).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from efficacy import run_job, write_results  # noqa: E402  (one crafting-job runner for every benchmark: time + peak RSS)

from hf_unlearnable.data import per_class_rows  # noqa: E402

# name -> (method, how, options). Options not given take the method's defaults; the bayes craft variants spell out
# the three options craft() would otherwise choose itself (bayes.CRAFT_DEFAULTS), so a variant names one setting.
_PLAIN = {"augment_draws": 0, "clean_anchors": False, "targeted_weight": 0.0}
# the bundled default + two victim-like ConvNets on rows the benchmark never uses (see the nearest variants below)
_VICTIM_LIKE_ENSEMBLE = ["default", str(ROOT / "runs" / "surrogates" / "convnet-s1"),
                         str(ROOT / "runs" / "surrogates" / "convnet-s2")]
VARIANTS: dict[str, tuple[str, str, dict]] = {
    # the per-batch variants spell out the options BATCH_DEFAULTS would choose, as the craft variants do
    "bayes-batch": ("bayes", "per-batch", {"augment_draws": 0, "targeted_weight": 0.0}),     # the plain step
    "bayes-batch-targeted": ("bayes", "per-batch", {"augment_draws": 0, "targeted_weight": 1.0}),
    # the per-batch form with two of craft's defaults (augmentation draws, the targeted term; clean anchors need
    # other minibatches, which a batch does not have): protect(method="bayes")'s defaults since session 12
    "bayes-batch-augment-targeted": ("bayes", "per-batch", {"augment_draws": 2, "targeted_weight": 1.0}),
    "bayes-craft": ("bayes", "craft", {**_PLAIN, "passes": 10}),
    "bayes-craft-refresh": ("bayes", "craft", {**_PLAIN, "passes": 10, "refresh_every": 3, "surrogate_epochs": 4}),
    "bayes-craft-augment": ("bayes", "craft", {**_PLAIN, "passes": 10, "augment_draws": 2}),
    "bayes-craft-augment4": ("bayes", "craft", {**_PLAIN, "passes": 10, "augment_draws": 4}),
    "bayes-craft-augment-targeted": ("bayes", "craft", {**_PLAIN, "passes": 10, "augment_draws": 2,
                                                         "targeted_weight": 1.0}),
    "bayes-craft-augment-refresh": ("bayes", "craft", {**_PLAIN, "passes": 10, "augment_draws": 2, "refresh_every": 3,
                                                        "surrogate_epochs": 4}),
    "bayes-craft-augment-anchors": ("bayes", "craft", {**_PLAIN, "passes": 10, "augment_draws": 2,
                                                        "clean_anchors": True}),
    "bayes-craft-augment-anchors-targeted": ("bayes", "craft", {"passes": 10, "augment_draws": 2, "clean_anchors": True,
                                                                 "targeted_weight": 1.0}),
    "bayes-craft-augment-anchors-targeted4": ("bayes", "craft", {"passes": 10, "augment_draws": 2,
                                                                  "clean_anchors": True, "targeted_weight": 4.0}),
    "bayes-craft-augment-anchors-long": ("bayes", "craft", {**_PLAIN, "passes": 20, "augment_draws": 2,
                                                             "clean_anchors": True}),
    # = craft(ds, "bayes") with its defaults since they were chosen from this table
    "bayes-craft-augment-anchors-targeted-long": ("bayes", "craft", {"passes": 20, "augment_draws": 2,
                                                                      "clean_anchors": True, "targeted_weight": 1.0}),
    # the default craft against a slightly robust surrogate (fast adversarial training at 2/255 on 20k rows the
    # benchmark never uses); train it first: see hub_scripts/train_surrogate.py
    "bayes-craft-robust2": ("bayes", "craft", {"surrogate": str(ROOT / "runs" / "surrogates" / "robust2")}),
    # a surrogate of the victim's family (ResNet-18 at half width, 6 epochs on per-class rows 2200..4999, which the
    # benchmark never uses; hub_scripts/train_surrogate.py --arch resnet18 --width 32), 10 passes: a ResNet surrogate
    # costs ten times the ConvNet's per pass
    "bayes-craft-resnet-surrogate": ("bayes", "craft", {"passes": 10,
                                                        "surrogate": str(ROOT / "runs" / "surrogates" / "resnet18w32")}),
    # ... and against both at once (SurrogateEnsemble: averaged logits, features side by side): 2x the cost
    "bayes-craft-ensemble": ("bayes", "craft", {"surrogate": ["default", str(ROOT / "runs" / "surrogates" /
                                                                         "robust2")]}),
    # target="nearest": the targeted term aims at each class's most-confused other class (surrogate's softmax on the
    # clean rows) instead of y+1; the ensemble adds two victim-like ConvNets trained on rows the benchmark never
    # uses (per class 2200..4999; hub_scripts/train_surrogate.py --class-rows 2200:5000 --epochs 12 --seed 1|2
    # --out runs/surrogates/convnet-s1|-s2); 10 passes: 3 members cost about 1.5x the one-member 20-pass default
    "bayes-craft-nearest": ("bayes", "craft", {"target": "nearest"}),
    "bayes-craft-nearest-ensemble3": ("bayes", "craft", {"target": "nearest", "passes": 10,
                                                          "surrogate": _VICTIM_LIKE_ENSEMBLE}),
    # ... with the targeted term dominating the kernel term (weight 8 on L1-normalised gradients): mix_probe.py's pure
    # targeted attacks did 4-5 pts better at r = 0.5 than the default craft
    "bayes-craft-nearest-ensemble3-targeted8": ("bayes", "craft", {"target": "nearest", "passes": 10,
                                                                    "targeted_weight": 8.0,
                                                                    "surrogate": _VICTIM_LIKE_ENSEMBLE}),
    # ... with the bundled default surrogate alone (nothing to train first): does the targeted-dominant setting need
    # the victim-like ensemble?
    "bayes-craft-nearest-targeted8": ("bayes", "craft", {"target": "nearest", "targeted_weight": 8.0}),
    "bayes-craft-nearest-targeted4": ("bayes", "craft", {"target": "nearest", "targeted_weight": 4.0}),
    # craft's defaults as they stand (the surrogate pass in bf16 where the CPU has it natively), and the same in
    # fp32 (the default until bf16 came in): speed and effect of the precision, in one run
    "bayes-craft-defaults": ("bayes", "craft", {}),
    "bayes-craft-defaults-fp32": ("bayes", "craft", {"bf16": False}),
    # twice the passes (20 -> 40): 10 -> 20 passes had helped at both ratios; affordable since session 12's speed-up
    "bayes-craft-defaults-40": ("bayes", "craft", {"passes": 40}),
    # the BEO code's own loop (methods.md §1.5) at this scale: one full-batch ascent step on all rows per pass, each
    # against a surrogate retrained from scratch on the current protected rows without augmentation (its HEAD
    # trains 30 epochs per step and takes 2,000 AdamW steps; here 8 epochs and 15 signed steps of epsilon / 10)
    "bayes-craft-beo-loop": ("bayes", "craft", {**_PLAIN, "passes": 15, "subset_size": 1_000_000,
                                                "refresh_every": 1, "surrogate_epochs": 8,
                                                "surrogate_augment": False}),
    "em-samplewise": ("em", "craft", {"mode": "samplewise", "min_iters": 10, "max_iters": 12}),
}
# the library's defaults for both forms, and EM sample-wise
DEFAULT_VARIANTS = ["bayes-batch-augment-targeted", "bayes-craft-defaults", "em-samplewise"]


def load_split(data: str, per_class: int, split: str, val_per_class: int, n_test: int | None):
    """The training subset (as efficacy.load_subset) and the evaluation set: test, or the held-out val rows."""
    from hf_unlearnable.data import load_cifar10

    train = load_cifar10("train", data)
    labels = train["label"]
    keep = per_class_rows(labels, 0, per_class)
    if split == "val":
        evaluation = train.select(per_class_rows(labels, per_class, per_class + val_per_class))
    else:
        evaluation = load_cifar10("test", data)
        if n_test:
            evaluation = evaluation.select(range(min(n_test, len(evaluation))))
    return train.select(keep), evaluation


def data_arguments(doc: str) -> argparse.ArgumentParser:
    """A parser with the options that pick the rows (`load_split`), shared by the benchmarks built on these rows."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "cifar10"))
    ap.add_argument("--per-class", type=int, default=1000)
    ap.add_argument("--split", choices=["val", "test"], default="test")
    ap.add_argument("--val-per-class", type=int, default=200, help="held-out train rows per class for --split val")
    ap.add_argument("--test", type=int, default=0, help="test rows (default 0 = all 10,000)")
    return ap


def craft_variant(name: str, variants: dict, args: argparse.Namespace, work: Path) -> dict:
    """Craft (or reuse, when finished before) one variant's protected rows under work/<name>; its job record."""
    method, how, options = variants[name]
    res = run_job({"name": name, "method": method, "how": how, "options": {"seed": args.seed, **options},
                   "data": args.data, "per_class": args.per_class, "out": str(work / name)})
    print(json.dumps(res), flush=True)
    return res


def main(argv=None) -> int:
    ap = data_arguments(__doc__)
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.2, 0.5, 0.8, 1.0])
    ap.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=DEFAULT_VARIANTS)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--victim-seed", type=int, default=None,
                    help="seed of the victims and of each mix's protected rows (default: --seed); the crafted sets "
                         "are reused, so several victim seeds measure the spread of one crafted set's effect")
    ap.add_argument("--no-augment", action="store_true",
                    help="victims train without crop+flip, as the BEO authors' protocol (methods.md §1.6); results "
                         "go to mixing[-val]-noaug.*")
    ap.add_argument("--victim", default=None, metavar="ARCH[:WIDTH]",
                    help="victim architecture instead of evaluate's auto choice, trained the same way (e.g. "
                         "resnet18:32, a ResNet-18 at half width); results go to mixing[-val]-ARCHwWIDTH.*")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--suffix", default="", help="results go to mixing[-val]...-SUFFIX.* (another table beside the "
                                                 "main one, e.g. for a few new variants)")
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench-efficacy"),
                    help="folder of crafted sets (shared with efficacy.py) and cached victims")
    args = ap.parse_args(argv)

    import datasets

    from hf_unlearnable import __version__, evaluate
    from hf_unlearnable.evaluate import VictimConfig
    from hf_unlearnable.surrogates.nets import build

    victim = VictimConfig.auto(args.epochs)
    victim.train.augment = not args.no_augment
    arch_tag = ""
    if args.victim:
        arch, _, width = args.victim.partition(":")
        victim = VictimConfig(arch, int(width) if width else None, victim.train)   # None: the net's own width
        build(victim.arch, 2, victim.width)  # an unknown architecture fails here, not after the crafting
        arch_tag = f"-{arch}" + (f"w{width}" if width else "")

    train, evaluation = load_split(args.data, args.per_class, args.split, args.val_per_class, args.test or None)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    jobs = [craft_variant(name, VARIANTS, args, work) for name in args.variants]

    victim_seed = args.seed if args.victim_seed is None else args.victim_seed
    cache = work / (f"mixing-{args.split}-e{args.epochs}-s{args.seed}{'-noaug' if args.no_augment else ''}{arch_tag}"
                    + (f"-v{victim_seed}" if victim_seed != args.seed else ""))
    cache.mkdir(exist_ok=True)
    ratios = sorted(set(args.ratios))
    base_file = cache / "baselines.json"
    base = json.loads(base_file.read_text()) if base_file.exists() else {}
    rows_of: dict[str, dict] = {}
    for name in args.variants:
        part = cache / f"{name}.json"
        done = json.loads(part.read_text()) if part.exists() else {}
        todo = [r for r in ratios if str(r) not in done]
        # the clean victim and the controls depend only on the rows and the seed: trained once, with the first
        # variant that has work left, and shared by all
        base_todo = [r for r in ratios if r < 1 and str(r) not in base]
        with_base = bool(base_todo) or "clean" not in base
        if todo or with_base:
            protected = datasets.load_from_disk(str(work / name))
            mix = sorted(set(todo) | (set(base_todo) if with_base else set())) or ratios
            rep = evaluate(protected, evaluation, clean=train, mix=mix, victim=victim, seed=victim_seed,
                           baselines=with_base)
            for row in rep.rows:
                if row["train_set"] == "clean":
                    base["clean"] = row
                elif row["train_set"] == "clean-only control":
                    base[str(row["ratio"])] = row
                else:
                    done[str(row["ratio"])] = {k: v for k, v in row.items() if k != "minus_control"}
            base["victim"] = rep.victim
            base_file.write_text(json.dumps(base, indent=1))
            part.write_text(json.dumps(done, indent=1))
        rows_of[name] = done

    table = []
    for name in args.variants:
        for r in ratios:
            row = rows_of[name][str(r)]
            ctrl = base.get(str(r)) if r < 1 else None
            table.append({"variant": name, "ratio": r, "accuracy": row["test_accuracy"],
                          "control": ctrl["test_accuracy"] if ctrl else None,
                          "minus_control": row["test_accuracy"] - ctrl["test_accuracy"] if ctrl else None})
    result = {"benchmark": "mixing", "split": args.split, "evaluation_rows": len(evaluation), "train_rows": len(train),
              "epochs": args.epochs, "seed": args.seed, "victim_seed": victim_seed, "ratios": ratios, "victim": base.get("victim"),
              "clean_accuracy": base["clean"]["test_accuracy"], "rows": table,
              "crafting": [{k: j[k] for k in ("name", "method", "how", "options", "images_per_second",
                                              "peak_rss_mib", "total_seconds", "stats") if k in j} for j in jobs],
              "hf_unlearnable": __version__, "date": time.strftime("%Y-%m-%d")}
    tag = (("mixing" if args.split == "test" else "mixing-val") + ("-noaug" if args.no_augment else "") + arch_tag
           + (f"-v{victim_seed}" if victim_seed != args.seed else "") + (f"-{args.suffix}" if args.suffix else ""))
    out = write_results(args.out, tag, result, to_markdown(result))
    plot(result, out / f"{tag}.png")
    return 0


def to_markdown(r: dict) -> str:
    split = "full CIFAR-10 test set" if r["split"] == "test" else f"validation split ({r['evaluation_rows']} held-out train rows)"
    lines = [f"# Mixing benchmark ({r['date']}, hf_unlearnable {r['hf_unlearnable']})", "",
             f"{r['train_rows']} class-balanced CIFAR-10 train rows (JPEG copy), accuracy on the {split}; victim "
             f"{(r['victim'] or {}).get('arch')}"
             + (f" (width {r['victim']['width']})" if (r['victim'] or {}).get('width') else "") + f" {r['epochs']} epochs, "
             f"{'crop+flip' if ((r['victim'] or {}).get('train') or {}).get('augment', True) else 'no augmentation'}, "
             f"seed {r['seed']}" + (f", victim seed {r['victim_seed']}" if r.get("victim_seed", r["seed"]) != r["seed"]
                                   else "") + ". A mix of ratio r replaces "
             "r of the rows by their protected twins (seeded); its control trains on the (1 - r) clean rows alone.",
             "", f"Clean (all rows): **{100 * r['clean_accuracy']:.2f} %**", "",
             "| method | r | victim accuracy | clean-only control | mix − control |", "|---|---|---|---|---|"]
    for row in r["rows"]:
        ctrl = f"{100 * row['control']:.2f} %" if row["control"] is not None else "–"
        gap = f"{100 * row['minus_control']:+.2f} pts" if row["minus_control"] is not None else "–"
        lines.append(f"| {row['variant']} | {row['ratio']:.1f} | {100 * row['accuracy']:.2f} % | {ctrl} | {gap} |")
    lines += ["", "| method | how | options | images/s | peak RSS (MiB) | Bayes-error estimate before → after |",
              "|---|---|---|---|---|---|"]
    for j in r["crafting"]:
        st = j.get("stats") or {}
        be = (f"{st['bayes_error_before']:.3f} → {st['bayes_error_after']:.3f}" if "bayes_error_before" in st
              else "–")
        rate = "n/a (resumed)" if j.get("images_per_second") is None else j["images_per_second"]
        lines.append(f"| {j['name']} | {j['how']} | `{json.dumps(j['options'])}` | {rate} | "
                     f"{j['peak_rss_mib']} | {be} |")
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in dict.fromkeys(row["variant"] for row in r["rows"]):
        pts = [(row["ratio"], 100 * row["accuracy"]) for row in r["rows"] if row["variant"] == name]
        ax.plot(*zip(*pts), marker="o", label=name)
    ctrl = sorted({(row["ratio"], 100 * row["control"]) for row in r["rows"] if row["control"] is not None})
    if ctrl:
        ax.plot(*zip(*ctrl), marker="s", linestyle="--", color="k", label="clean-only control")
    ax.axhline(100 * r["clean_accuracy"], color="grey", linestyle=":", label="clean (all rows)")
    ax.set_xlabel("share of protected rows r")
    ax.set_ylabel(f"victim accuracy (%), {r['split']}")
    ax.set_title("Victim accuracy against the mix ratio")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
