"""Speed against the limits: how close the trainer and each craft come to the networks' own forward+backward rate.

1. Limits, per architecture the library builds (convnet w16 at batch 256, resnet18 w64 and w16 at batch 128; 10
   classes, 32x32), in fp32 and, where training.fast_bf16 holds, in bf16 autocast: images/s of
   `train_limit` (backward to the weights, train mode), `input_grad_limit` (to the weights and the input),
   `input_only_limit` (to the input only, eval mode, frozen weights: what pgd_min and bayes' ascent do) and
   `forward_limit` (eval, no grad: evaluation and feature passes).
2. The victim trainer (training.fit, VictimConfig.auto) on synthetic uint8 images.
   fraction_of_limit = its images/s / train_limit of the victim's architecture.
3. One round / pass of each craft on the bundled CIFAR-10 rows, each with its work counted from its resolved
   config (count_work). fraction_of_limit = (seconds the counted work takes at the limits) / (seconds it took),
   reading the dataset excluded; limit_images_per_s is the forward+backward images/s the craft would reach at its
   limits. fraction_of_same_batch_limit: the same with limits measured at the batch sizes each part runs at.
   Each timed part (surrogate steps, noise steps, bayes' ascent, ...) is recorded beside the work it holds.

    python benchmarks/speed.py [--quick] [--out-dir DIR]

Writes speed.json, speed.md and speed.png to --out-dir (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_limits import Timed, arch_key, dtype_of, measure, sync  # noqa: E402
from speed_report import OTHER, environment, plot, to_markdown  # noqa: E402

NETS = [("convnet", 16, 256), ("resnet18", 64, 128), ("resnet18", 16, 128)]     # (arch, width, batch)
KINDS = ("train", "input_grad", "input_only", "forward")
CRAFTS = [      # (entry name, method, options); pue's robust steps on from round 1 (turn_on_robust=0)
    ("em samplewise", "em", dict(mode="samplewise", max_iters=1, min_iters=1)),
    ("em classwise", "em", dict(mode="classwise", max_iters=1, min_iters=1)),
    ("bayes", "bayes", dict(passes=1)),
    ("pue", "pue", dict(max_iters=1, min_iters=1, turn_on_robust=0, train_steps=5)),
    # tap: per batch, crafted through the default _craft (its per-batch form on every row), 200 rows
    ("tap", "tap", dict(rows=200)),
    # rem: em's loop with adversarial surrogate steps and the robust noise step, one round on 1,000 rows
    ("rem", "rem", dict(max_iters=1, min_iters=1, rows=1000)),
]
QUICK = {"em": dict(steps=2, train_steps=2, batch_size=32), "bayes": dict(subset_size=16),
         "pue": dict(train_steps=1, avgtimes=1, avgtimes_perturb=1, batch_size=32), "tap": dict(steps=2),
         "rem": dict(steps=1, adversarial_steps=1, eot=1, train_steps=1, batch_size=32)}


def count_work(method: str, cfg: dict, stats: dict, n: int) -> tuple[list[tuple], str]:
    """The network work of one craft from its resolved config: (part, images, limit kind, dtype, backward passes
    per forward, batch the library runs it at) per part."""
    if method == "bayes":
        # per pass: every row x augment_draws: one forward kept for autograd, one input-gradient backward per term
        # (Bayes estimate, + targeted term); the next minibatch's clean rows as anchors: one no-grad forward per draw;
        # the feature scale: one forward of every row. Per craft: reference scale, estimate before and after
        # (3 fp32 forwards of every row, model.features without autocast, 1,000-row chunks)
        p, d = cfg["passes"], max(1, cfg["augment_draws"] or 0)
        back, dt = 2 if cfg["targeted_weight"] else 1, dtype_of(cfg["bf16"])
        size = min(cfg["subset_size"], max(2, n // 2)) if cfg["clean_anchors"] else cfg["subset_size"]
        fb = min(cfg["feature_batch"], -(-n // max(1, round(n / size))))      # surrogate slices of a minibatch
        chunk = min(1000, n)
        parts = [("ascent", p * n * d, "input_only", dt, back, fb),
                 ("ascent: anchor forwards", p * n * d if cfg["clean_anchors"] else 0, "forward", dt, 0, fb),
                 ("feature scale", p * n, "forward", dt, 0, min(chunk, cfg["feature_batch"])),
                 ("reference scale", n, "forward", "fp32", 0, chunk),
                 ("before/after estimates", 2 * n, "forward", "fp32", 0, chunk)]
        text = (f"{p} pass(es) x {n} rows x {d} draw(s) x (fwd + {back} input-grad bwd); anchors {d} fwd/row/pass; "
                f"scale 1 fwd/row/pass; 3 fp32 fwd/row once (reference scale, estimate before and after)")
        return parts, text
    if method == "tap":
        # per batch against the fixed surrogate, fp32 (bytes stable across batch sizes), chunks of batch_size rows:
        # one input-gradient pass per PGD step (+ one forward per row for target="nearest")
        text = f"{cfg['steps']} PGD steps x {n} rows input-grad (fp32)"
        bs = min(cfg["batch_size"], n)
        nearest = n if cfg["target"] == "nearest" else 0
        return [("noise steps", cfg["steps"] * n, "input_only", "fp32", 1, bs),
                ("target forwards", nearest, "forward", "fp32", 0, bs)], text
    rounds, rows = stats["rounds"], stats["rows_fitted"]
    bs = min(cfg["batch_size"], rows)   # em.craft: a batch never repeats a small set
    nbs = cfg["noise_batch_size"] or (bs if cfg["mode"] == "samplewise" else max(16, min(bs, rows // 20)))
    nbs = min(nbs, rows)
    robust = method == "pue" and cfg.get("turn_on_robust") is not None and cfg["turn_on_robust"] <= 0
    if method == "rem":
        # per round train_steps adversarial steps (the inner adversary's input-gradient passes, then one SGD step),
        # then every row's noise step: steps x eot draws x (inner steps + the outer one) input-gradient passes;
        # bf16 where fast. Counted as input-gradient passes beside train steps
        inner, passes = cfg["adversarial_steps"], cfg["steps"] * cfg["eot"] * (cfg["adversarial_steps"] + 1)
        dt = dtype_of(True)
        parts = [("surrogate steps", rounds * cfg["train_steps"] * bs, "train", dt, 1, bs),
                 ("surrogate steps: adversary", rounds * cfg["train_steps"] * bs * inner, "input_only", dt, 1, bs),
                 ("noise steps", rounds * rows * passes, "input_only", dt, 1, nbs),
                 ("evaluation", rounds * rows, "forward", dt, 0, min(1000, rows))]
        return parts, (f"{rounds} round(s) x ({cfg['train_steps']} steps x {bs} rows x ({inner} inner input-grad + "
                       f"train) + {rows} rows x {cfg['steps']} steps x {cfg['eot']} draws x ({inner} + 1) "
                       f"input-grad + {rows} eval fwd); batches {bs} (train), {nbs} (noise)")
    if robust:
        # PUE once switched on: every surrogate step is one SGD step per weight-noise level, each averaging
        # avgtimes draws (fwd+bwd each); every noise update one signed step per level over avgtimes_perturb draws;
        # both without autocast (fp32)
        levels = int(round(cfg["robust_noise"] / cfg["robust_noise_step"])) + 1
        train = rounds * cfg["train_steps"] * levels * cfg["avgtimes"] * bs
        noise = rounds * rows * levels * cfg["avgtimes_perturb"]
        dt, text = "fp32", (f"{rounds} round(s) x ({cfg['train_steps']} steps x {levels} levels x {cfg['avgtimes']} "
                            f"draws x {bs} rows train + {rows} rows x {levels} levels x {cfg['avgtimes_perturb']} "
                            f"draws input-grad + {rows} eval fwd)")
    else:
        # em: per round train_steps SGD steps of bs rows (StepTrainer, bf16 where fast), then `steps` PGD passes over
        # every fitted row (class-wise: the stratified subset; its signed step on the class pattern is one
        # input-gradient pass per row too), then one evaluation forward per fitted row
        train, noise = rounds * cfg["train_steps"] * bs, rounds * cfg["steps"] * rows
        dt, text = dtype_of(True), (f"{rounds} round(s) x ({cfg['train_steps']} steps x {bs} rows train + "
                                    f"{cfg['steps']} PGD steps x {rows} rows input-grad + {rows} eval fwd)")
    parts = [("surrogate steps", train, "train", dt, 1, bs), ("noise steps", noise, "input_only", dt, 1, nbs),
             ("evaluation", rounds * rows, "forward", dtype_of(True), 0, min(1000, rows))]
    return parts, f"{text}; batches {bs} (train), {nbs} (noise)"


def _seconds_at(parts: list[tuple], rate) -> list[float]:
    """Each part's seconds at the limits `rate(kind, dtype, batch)`; fwd + k bwd costs 1/F + k (1/G - 1/F): the
    backward's time is the fwd+bwd time less the forward's (both measured)."""
    out = []
    for _, images, kind, dt, back, batch in parts:
        fwd = rate("forward", dt, batch)
        out.append(images * (1 / fwd + back * (1 / rate(kind, dt, batch) - 1 / fwd)) if back else images / fwd)
    return out


def run_craft(ds, name: str, method: str, options: dict, limits: dict, rate_at, dev) -> dict:
    """One craft, timed whole and per part, beside its work counted at the reference and the same-batch limits."""
    import importlib

    from hf_unlearnable import craft
    from hf_unlearnable.methods import get_method

    cls, mod = get_method(method), importlib.import_module(f"hf_unlearnable.methods.{method}")
    timer = Timed(dev)
    timer.wrap(importlib.import_module("hf_unlearnable._craft"), "load_labelled", "reading")
    if method == "bayes":
        timer.wrap(cls, "_ascent_direction", "ascent")
        timer.wrap(cls, "_estimate", "before/after estimates")
        timer.wrap(mod, "bayes_error", "kernel estimator (bayes_error, in both above)")
    elif method == "tap":
        timer.wrap(cls, "perturb", "noise steps")
    else:
        timer.wrap(cls, "_surrogate_step", "surrogate steps")
        timer.wrap(cls, "_noise_step", "noise steps")
        timer.wrap(importlib.import_module("hf_unlearnable.methods.em"), "pgd_min_classwise", "noise steps")
    sync(dev)
    t0 = time.perf_counter()
    try:
        noise = craft(ds, method, seed=0, **options)
    finally:
        sync(dev)
        total = time.perf_counter() - t0
        timer.restore()
    cfg, stats = noise.config.method_config, noise.config.stats
    seconds = total - timer.seconds.get("reading", 0.0)
    arch, formats = arch_key(cfg.get("surrogate_arch", "convnet"), cfg.get("surrogate_width")), {}
    parts, counted = count_work(method, cfg, stats, len(ds))
    if method in ("bayes", "tap") and cfg.get("surrogate") is None:
        from hf_unlearnable.surrogates import load_surrogate
        from hf_unlearnable.training import memory_format

        arch = arch_key("convnet", None)     # the bundled surrogate (surrogates/default/config.json)
        conv = next(p for p in load_surrogate().parameters() if p.ndim == 4)
        # bayes runs the surrogate as loaded; the limits run in training.memory_format
        formats = {"surrogate_memory_format": "contiguous_format" if conv.is_contiguous() else "channels_last",
                   "limits_memory_format": str(memory_format(dev)).replace("torch.", "")}
    at_ref = _seconds_at(parts, lambda kind, dt, batch: limits[(arch, kind, dt)])
    at_batch = _seconds_at(parts, lambda kind, dt, batch: rate_at(arch, kind, dt, batch))
    fb_images = sum(p[1] for p in parts if p[4])
    work = [{"part": p[0], "images": p[1], "limit": f"{p[2]}_limit", "dtype": p[3], "backward_per_forward": p[4],
             "batch": p[5], "seconds_at_limit": round(a, 3), "seconds_at_same_batch_limit": round(b, 3)}
            for p, a, b in zip(parts, at_ref, at_batch)]
    measured = {k: round(v, 3) for k, v in timer.seconds.items()}
    measured[OTHER] = round(seconds - sum(v for k, v in timer.seconds.items()
                                          if k != "reading" and "in both" not in k), 3)
    return {"name": name, "kind": "craft", "method": method, "arch": arch, "dtype": parts[0][3],
            "images_per_s": fb_images / seconds, "limit_images_per_s": fb_images / sum(at_ref),
            "fraction_of_limit": sum(at_ref) / seconds, "fraction_of_same_batch_limit": sum(at_batch) / seconds,
            "seconds": round(seconds, 2), "reading_seconds": round(timer.seconds.get("reading", 0.0), 2),
            "options": options, "rows": len(ds), "counted": counted, "work": work, "measured_seconds": measured,
            "calls": timer.calls, "method_config": cfg, "rounds_or_passes": stats.get("rounds", stats.get("passes")),
            **formats}


def run_trainer(n: int, epochs: int, limits: dict, rate_at, batches: dict) -> dict:
    import torch

    from hf_unlearnable.evaluate import VictimConfig
    from hf_unlearnable.surrogates.nets import build
    from hf_unlearnable.training import fit

    cfg = VictimConfig.auto(epochs)       # what evaluate() trains when no victim is named
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    torch.manual_seed(0)
    hist = fit(build(cfg.arch, 10, cfg.width), images, labels, cfg.train, seed=0, progress=False)
    arch, dt = arch_key(cfg.arch, cfg.width), dtype_of(cfg.train.bf16)
    rate, limit = n * epochs / hist["seconds"], limits[(arch, "train", dt)]
    # the bare step at the trainer's own batch size: what of the gap is batch size, what is the loop
    same = rate_at(arch, "train", dt, cfg.train.batch_size)
    return {"name": "trainer", "kind": "trainer", "arch": arch, "dtype": dt, "images_per_s": rate,
            "limit_images_per_s": limit, "fraction_of_limit": rate / limit, "limit_batch": batches[arch],
            "train_limit_at_trainer_batch": same, "fraction_of_same_batch_limit": rate / same,
            "seconds": round(hist["seconds"], 2), "options": {"rows": n, "epochs": epochs, **cfg.to_dict()},
            "counted": f"{epochs} epoch(s) x {n} synthetic uint8 rows, one fwd+bwd each (crop+flip, SGD step, "
                       "grad clip and schedule are the trainer's own cost)"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes and a few steps (a smoke test)")
    ap.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--rows", type=int, default=2000, help="bundled CIFAR-10 rows each craft runs on (<= 2000)")
    ap.add_argument("--budget", type=float, default=3.0, help="seconds each limit is timed for (3 windows)")
    args = ap.parse_args(argv)

    import datasets

    from hf_unlearnable.data import load_cifar10, per_class_rows
    from hf_unlearnable.surrogates import load_surrogate
    from hf_unlearnable.training import device, fast_bf16

    datasets.disable_progress_bars()
    t_start, dev = time.perf_counter(), device()
    env = environment()
    dtypes = ["fp32"] + (["bf16"] if fast_bf16(dev.type) else [])
    budget, rows, timing = (0.0, 40, (1, 1)) if args.quick else (args.budget, args.rows, ())
    batches = {arch_key(a, w): 8 if args.quick else b for a, w, b in NETS}
    limits, entries, same_batch = {}, [], {}
    measure("convnet", None, 8, "train", "fp32", 0.0, *timing)     # the process's first kernels, untimed

    def rate_at(key: str, kind: str, dt: str, batch: int) -> float:
        """The limit at another batch size (measured once, cached); the reference batch's own limit otherwise."""
        if batch == batches[key]:
            return limits[(key, kind, dt)]
        if (key, kind, dt, batch) not in same_batch:
            arch, width = key.rsplit("-w", 1)
            same_batch[(key, kind, dt, batch)] = measure(arch, int(width), batch, kind, dt, budget, *timing)
        return same_batch[(key, kind, dt, batch)]["images_per_s"]

    for arch, width, _ in NETS:
        key = arch_key(arch, width)
        for dt in dtypes:
            for kind in KINDS:
                m = measure(arch, width, batches[key], kind, dt, budget, *timing)
                limits[(key, kind, dt)] = m["images_per_s"]
                entries.append({"name": f"{key} {kind}_limit {dt}", "kind": "limit", "arch": key, "dtype": dt,
                                "limit": f"{kind}_limit", "images_per_s": m["images_per_s"],
                                "limit_images_per_s": None, "fraction_of_limit": None, "options": m,
                                "counted": f"best of {len(m['window_images_per_s'])} timed windows, batch "
                                           f"{batches[key]}"})
                print(f"{entries[-1]['name']}: {m['images_per_s']:.0f} img/s", flush=True)
    entries.append(run_trainer(64 if args.quick else 2048, 1 if args.quick else 2, limits, rate_at, batches))
    print(f"trainer: {entries[-1]['images_per_s']:.0f} img/s", flush=True)
    train = load_cifar10("train", "bundled")
    ds = train.select(per_class_rows(train["label"], 0, rows // 10)).flatten_indices()
    load_surrogate()     # bayes' bundled surrogate, read once before any timing
    for name, method, options in CRAFTS:
        options = {**options, **(QUICK[method] if args.quick else {})}
        n = options.pop("rows", len(ds))
        entries.append(run_craft(ds.select(range(min(n, len(ds)))), name, method, options, limits, rate_at, dev))
        e = entries[-1]
        print(f"{name}: {e['images_per_s']:.0f} img/s, {100 * e['fraction_of_limit']:.1f} % of limit, "
              f"{100 * e['fraction_of_same_batch_limit']:.1f} % of same-batch limit ({e['seconds']} s)", flush=True)
    result = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "environment": env, "quick": args.quick,
              "bf16": "native" if "bf16" in dtypes else "not native here", "entries": entries,
              "fraction_of_limit": {e["name"]: e["fraction_of_limit"] for e in entries if e["kind"] != "limit"},
              "same_batch_limits": [{"arch": k[0], "limit": f"{k[1]}_limit", "dtype": k[2], **m}
                                    for k, m in same_batch.items()],
              "seconds": round(time.perf_counter() - t_start, 1),
              "load_average_after": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "speed.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "speed.md").write_text(to_markdown(result))
    plot(result, out / "speed.png")
    print(f"wrote {out / 'speed.json'} ({result['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
