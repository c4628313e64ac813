"""Efficacy + crafting-speed benchmark (the foundation's CPU protocol).

Data: a class-balanced subset of the CIFAR-10 train set (default 1,000 per class = 10k) and the full test set,
from a Parquet folder in the Hub's cifar10 schema (default ../shared/data/cifar10, a JPEG q75 copy).
Victims (one trainer, `evaluate`): clean, random, EM class-wise, EM sample-wise at 100 % protection, and a 50 %
mix of sample-wise EM beside its clean-only control. Crafting runs each method in its own process so its peak
RSS is its own. Writes benchmarks/results/efficacy.json and efficacy.md.

    python benchmarks/efficacy.py                       # full 10k protocol (about an hour on 2 CPU cores)
    python benchmarks/efficacy.py --per-class 50 --test 500 --epochs 2 --em-max-iters 1   # smoke run
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10"


def load_subset(data: str, per_class: int, n_test: int | None):
    from hf_unlearnable.data import load_cifar10, per_class_rows

    train = load_cifar10("train", data)
    keep = per_class_rows(train["label"], 0, per_class)
    test = load_cifar10("test", data)
    if n_test:
        test = test.select(range(min(n_test, len(test))))
    return train.select(keep), test


def _craft_job(args: dict) -> dict:
    """Run in a fresh process: craft/apply one method, save the protected set, report time and peak RSS."""
    from hf_unlearnable import craft, protect

    train, _ = load_subset(args["data"], args["per_class"], 1)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # a craft resumed from an interrupted run's checkpoint only times the rest: its rate is not comparable
    resumed = args["how"] != "per-batch" and (Path(args["out"] + ".ckpt") / "state.json").exists()
    t0 = time.perf_counter()
    if args["how"] == "per-batch":
        protected = train.map(protect(method=args["method"], **args["options"]), batched=True, batch_size=500,
                              with_indices=True, load_from_cache_file=False, desc=args["name"])
        craft_seconds = time.perf_counter() - t0
        stats = {}
    else:
        noise = craft(train, args["method"], checkpoint_dir=args["out"] + ".ckpt", **args["options"])
        craft_seconds = time.perf_counter() - t0
        stats = {k: v for k, v in noise.config.stats.items() if k != "history"}
        protected = train.map(protect(noise=noise), batched=True, with_indices=True, load_from_cache_file=False,
                              desc=f"apply {args['name']}")
    total = time.perf_counter() - t0
    protected.save_to_disk(args["out"])
    result = {"name": args["name"], "method": args["method"], "how": args["how"], "options": args["options"],
            "rows": len(train), "craft_seconds": round(craft_seconds, 1), "total_seconds": round(total, 1),
            "images_per_second": None if resumed else round(len(train) / total, 1), "resumed": resumed,
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "rss_before_crafting_mib": round(rss_before / 1024, 1), "stats": stats}
    (Path(args["out"]) / "job.json").write_text(json.dumps(result))  # marks the job complete (resume)
    return result


def run_job(job: dict) -> dict:
    done = Path(job["out"]) / "job.json"
    if done.exists():  # finished by an earlier, interrupted run of the same benchmark
        result = json.loads(done.read_text())
        if (result.get("method"), result.get("how"), result.get("options")) != (job["method"], job["how"],
                                                                                   job["options"]):
            raise SystemExit(f"{job['out']} holds {result.get('name')!r} crafted with other options "
                             f"({result.get('options')}, now {job['options']}): delete that folder (and its .ckpt) "
                             "or pass another --work.")
        return result
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(_craft_job, (job,))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="CIFAR-10 Parquet folder (default ../shared/data/cifar10)")
    ap.add_argument("--per-class", type=int, default=1000, help="train rows per class (default 1000 -> 10k)")
    ap.add_argument("--test", type=int, default=0, help="test rows (default 0 = all 10,000)")
    ap.add_argument("--epochs", type=int, default=30, help="victim epochs (default 30)")
    ap.add_argument("--em-max-iters", type=int, default=15, help="EM outer rounds ceiling (default 15)")
    ap.add_argument("--em-min-iters", type=int, default=10, help="EM outer rounds floor (default 10)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="results folder")
    ap.add_argument("--tag", default="efficacy", help="file name stem of the results (default efficacy)")
    ap.add_argument("--only", nargs="+", default=None, choices=["random", "em-classwise", "em-samplewise"],
                    help="run only these methods (the clean victim is always trained)")
    ap.add_argument("--work", default=None, help="folder for protected sets; finished jobs there are reused, so an "
                    "interrupted run resumes (default runs/bench-<tag>)")
    args = ap.parse_args(argv)

    import datasets
    import torch

    from hf_unlearnable import __version__, evaluate

    train, test = load_subset(args.data, args.per_class, args.test or None)
    em = {"min_iters": min(args.em_min_iters, args.em_max_iters), "max_iters": args.em_max_iters}
    jobs = [
        ("random", "random", "per-batch", {"seed": args.seed}),
        ("em-classwise", "em", "craft", {"mode": "classwise", "seed": args.seed, **em}),
        ("em-samplewise", "em", "craft", {"mode": "samplewise", "seed": args.seed, **em}),
    ]
    jobs = [j for j in jobs if args.only is None or j[0] in args.only]
    work = Path(args.work or ROOT / "runs" / f"bench-{args.tag}")
    work.mkdir(parents=True, exist_ok=True)
    crafted, protected = [], {}
    for name, method, how, options in jobs:
        out = str(work / name)
        res = run_job({"name": name, "method": method, "how": how, "options": options, "data": args.data,
                       "per_class": args.per_class, "out": out})
        print(json.dumps(res), flush=True)
        crafted.append(res)
        protected[name] = datasets.load_from_disk(out)

    victims = {}
    names = [j[0] for j in jobs]
    for name in names:
        part = work / f"victims-{name}-e{args.epochs}.json"
        if part.exists():
            victims[name] = json.loads(part.read_text())
            continue
        if name == "em-samplewise":
            rep = evaluate(protected[name], test, clean=train, mix=[0.5, 1.0], epochs=args.epochs, seed=args.seed)
        elif name == names[0] and "em-samplewise" not in names:  # the clean victim rides with the first method
            rep = evaluate(protected[name], test, clean=train, epochs=args.epochs, seed=args.seed)
        else:
            rep = evaluate(protected[name], test, epochs=args.epochs, seed=args.seed)
        victims[name] = rep.to_dict()
        part.write_text(json.dumps(victims[name]))
        print(rep.to_markdown(), flush=True)
    victim_seconds = sum(r["seconds"] for v in victims.values() for r in v["rows"])

    def acc(name, train_set, ratio=None):
        if train_set == "clean":
            return next((r["test_accuracy"] for v in victims.values() for r in v["rows"]
                         if r["train_set"] == "clean"), None)
        for r in victims.get(name, {"rows": []})["rows"]:
            if r["train_set"] == train_set and (ratio is None or abs(r["ratio"] - ratio) < 1e-9):
                return r["test_accuracy"]
        return None

    summary = [
        {"training set": "clean (all rows)", "test_accuracy": acc("em-samplewise", "clean")},
        {"training set": "random noise, 100 %", "test_accuracy": acc("random", "protected")},
        {"training set": "EM class-wise, 100 %", "test_accuracy": acc("em-classwise", "protected")},
        {"training set": "EM sample-wise, 100 %", "test_accuracy": acc("em-samplewise", "protected")},
        {"training set": "EM sample-wise, 50 % mix", "test_accuracy": acc("em-samplewise", "mix", 0.5)},
        {"training set": "clean-only control of the 50 % mix (the clean half alone)",
         "test_accuracy": acc("em-samplewise", "clean-only control", 0.5)},
    ]
    result = {
        "benchmark": "efficacy", "date": time.strftime("%Y-%m-%d"), "library_version": __version__,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "data": args.data, "train_rows": len(train), "test_rows": len(test), "epochs": args.epochs,
        "seed": args.seed, "victim": next(iter(victims.values()))["victim"], "summary": summary, "crafting": crafted,
        "victims": victims, "victim_seconds": round(victim_seconds, 1),
    }
    write_results(args.out, args.tag, result, to_markdown(result))
    return 0


def write_results(out: str | Path, tag: str, result: dict, markdown: str) -> Path:
    """Every benchmark's output: <out>/<tag>.json (the numbers and protocol) and <tag>.md (the table, also printed)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{tag}.json").write_text(json.dumps(result, indent=1))
    (out / f"{tag}.md").write_text(markdown)
    print(markdown)
    return out


def to_markdown(r: dict) -> str:
    v = r["victim"]
    lines = [
        f"# Efficacy benchmark ({r['date']}, hf_unlearnable {r['library_version']}, torch {r['torch']}, "
        f"{r['threads']} threads)",
        "",
        f"{r['train_rows']} class-balanced CIFAR-10 train images, {r['test_rows']} test images ({r['data']}); "
        f"victim {v['arch']}, {v['train']['epochs']} epochs, batch {v['train']['batch_size']}, crop+flip, seed "
        f"{r['seed']}; epsilon 8/255.",
        "",
        "| victim trained on | clean test accuracy |",
        "|---|---|",
    ]
    for s in r["summary"]:
        a = s["test_accuracy"]
        lines.append(f"| {s['training set']} | {'n/a' if a is None else f'{100 * a:.2f} %'} |")
    lines += ["", "| method | applied | rows | crafting s | total s (incl. applying) | images/s | peak RSS MiB | "
              "rounds / final surrogate error |", "|---|---|---|---|---|---|---|---|"]
    for c in r["crafting"]:
        st = c.get("stats") or {}
        extra = (f"{st.get('rounds')} / {st.get('final_error'):.4f}" if st.get("rounds") else "")
        lines.append(f"| {c['name']} | {c['how']} | {c['rows']} | {c['craft_seconds']} | {c['total_seconds']} | "
                     f"{'n/a (resumed)' if c.get('images_per_second') is None else c['images_per_second']} | "
                     f"{c['peak_rss_mib']} | {extra} |")
    lines += ["", f"Victim training total: {r['victim_seconds']} s.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
