"""Certificates and recovery: EM class-wise against PUE on the CPU protocol (issue: pue and certify()).

For each method: craft class-wise noise on a class-balanced CIFAR-10 train subset, train theta-hat (the victim
trainer of `evaluate`) on the protected subset, report its clean test accuracy, the certified (q, eta)-learnability
for each sigma and eta, the smallest n for which each eta does not abstain, and the weight-recovery curve
(fine-tuning on a disjoint clean train subset, projected onto the eta-sphere). Writes JSON + Markdown + a PNG.

    python benchmarks/certify.py                     # defaults: 5k train, 1k test, n=200
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from efficacy import DEFAULT_DATA  # noqa: E402


def smallest_n(q: float, sigma: float, eta: float, confidence: float, n_max: int = 100000) -> int | None:
    from scipy.stats import norm

    from hf_unlearnable.certify import order_statistic_k

    q_bar = float(norm.cdf(norm.ppf(q) + eta / sigma))
    lo, hi = 1, n_max
    if order_statistic_k(hi, q_bar, confidence) is None:
        return None
    while lo < hi:  # k exists for every n beyond the first one that has it
        mid = (lo + hi) // 2
        if order_statistic_k(mid, q_bar, confidence) is None:
            lo = mid + 1
        else:
            hi = mid
    return lo


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--per-class", type=int, default=500, help="train rows per class (default 500 -> 5k)")
    ap.add_argument("--recover-per-class", type=int, default=100, help="clean rows per class for recovery")
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=15, help="theta-hat epochs")
    ap.add_argument("--n", type=int, default=200, help="weight draws per certificate")
    ap.add_argument("--q", type=float, default=0.9)
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.25, 0.05])
    ap.add_argument("--etas", type=float, nargs="+", default=[0.0, 0.01, 0.05, 0.1, 0.25])
    ap.add_argument("--recover-etas", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0, 4.0])
    ap.add_argument("--recover-epochs", type=int, default=5)
    ap.add_argument("--max-iters", type=int, default=10, help="EM/PUE outer rounds ceiling")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)

    import torch

    from hf_unlearnable import __version__, certify, craft, protect
    from hf_unlearnable._data import load_labelled
    from hf_unlearnable.certify import recover
    from hf_unlearnable.data import load_cifar10
    from hf_unlearnable.evaluate import _victim
    from hf_unlearnable.surrogates.nets import build
    from hf_unlearnable.training import fit, nchw

    full = load_cifar10("train", args.data)
    labels = np.asarray(full["label"])
    per = [np.flatnonzero(labels == k) for k in np.unique(labels)]
    train = full.select(np.sort(np.concatenate([r[:args.per_class] for r in per])))
    held = full.select(np.sort(np.concatenate([r[args.per_class:args.per_class + args.recover_per_class]
                                               for r in per])))
    test = load_cifar10("test", args.data).select(range(args.test))

    results = {}
    for name, method, opts in [("em-classwise", "em", {"mode": "classwise"}), ("pue", "pue", {})]:
        t0 = time.perf_counter()
        noise = craft(train, method, seed=args.seed, min_iters=min(10, args.max_iters), max_iters=args.max_iters,
                      **opts)
        craft_s = time.perf_counter() - t0
        protected = train.map(protect(noise=noise), batched=True, load_from_cache_file=False)
        P = load_labelled(protected)
        cfg = _victim(None, args.epochs)
        model = build(cfg.arch, P.num_classes, cfg.width)
        fit(model, nchw(P.images), torch.from_numpy(P.labels),
            cfg.train, seed=args.seed, desc=f"theta-hat {name}")
        certs = {}
        for sigma in args.sigmas:
            c = certify(protected, test, q=args.q, sigma=sigma, n=args.n, etas=args.etas, model=model,
                        seed=args.seed)
            certs[str(sigma)] = {"base_accuracy": c.base_accuracy, "median_smoothed": float(np.median(c.accuracies)),
                                 "entries": c.entries, "seconds": c.seconds}
        rec = recover(model, held, test, etas=args.recover_etas, epochs=args.recover_epochs, seed=args.seed)
        results[name] = {"craft_seconds": round(craft_s, 1), "rounds": noise.config.stats.get("rounds"),
                         "final_error": noise.config.stats.get("final_error"), "certificates": certs,
                         "recovery": rec}
        print(name, json.dumps(results[name]["certificates"])[:400], flush=True)

    n_needed = {str(s): {str(e): smallest_n(args.q, s, e, 0.99) for e in args.etas} for s in args.sigmas}
    out = {"benchmark": "certify", "date": time.strftime("%Y-%m-%d"), "library_version": __version__,
           "torch": torch.__version__, "train_rows": len(train), "recover_rows": len(held), "test_rows": len(test),
           "epochs": args.epochs, "n": args.n, "q": args.q, "confidence": 0.99, "seed": args.seed,
           "smallest_n_without_abstaining": n_needed, "results": results}
    dest = Path(args.out)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "certify.json").write_text(json.dumps(out, indent=2))
    (dest / "certify.md").write_text(to_markdown(out))
    plot(out, dest / "certify.png")
    print(to_markdown(out))
    return 0


def to_markdown(o: dict) -> str:
    lines = [f"# Certificates and recovery ({o['date']}, hf_unlearnable {o['library_version']})", "",
             f"{o['train_rows']} CIFAR-10 train rows protected, theta-hat trained {o['epochs']} epochs; certified on "
             f"{o['test_rows']} test rows with n={o['n']} weight draws, q={o['q']}, confidence {o['confidence']}; "
             f"recovery fine-tunes on {o['recover_rows']} disjoint clean train rows.", ""]
    for name, r in o["results"].items():
        lines.append(f"## {name} (crafted in {r['craft_seconds']} s, {r['rounds']} rounds, final surrogate error "
                     f"{r['final_error']:.3f})")
        for sigma, c in r["certificates"].items():
            lines.append(f"- sigma={sigma}: theta-hat test accuracy {100 * c['base_accuracy']:.2f} %, median smoothed "
                         f"{100 * c['median_smoothed']:.2f} %; certified learnability: " + ", ".join(
                             f"eta={e['eta']:g}: " + ("abstain" if e["learnability"] is None
                                                      else f"{100 * e['learnability']:.2f} %") for e in c["entries"]))
        lines.append("- recovery (test accuracy after fine-tuning on the eta-sphere): " + ", ".join(
            f"eta={p['eta']:g}: {100 * p['test_accuracy']:.2f} %" for p in r["recovery"]["curve"]))
        lines.append("")
    lines.append("Smallest n for which the bound does not abstain: " + json.dumps(o["smallest_n_without_abstaining"]))
    return "\n".join(lines) + "\n"


def plot(o: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, r in o["results"].items():
        for sigma, c in r["certificates"].items():
            pts = [(e["eta"], e["learnability"]) for e in c["entries"] if e["learnability"] is not None]
            if pts:
                axes[0].plot(*zip(*pts), marker="o", label=f"{name} sigma={sigma}")
        axes[1].plot([p["eta"] for p in r["recovery"]["curve"]], [p["test_accuracy"] for p in r["recovery"]["curve"]],
                     marker="o", label=name)
    axes[0].set(xlabel="eta", ylabel="certified learnability", title="certificate")
    axes[1].set(xlabel="eta", ylabel="test accuracy", title="weight recovery")
    for a in axes:
        a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    sys.exit(main())
