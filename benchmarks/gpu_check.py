"""The one prepared script for a lent GPU: the limits, a ResNet-18 victim on full CIFAR-10, and the two crafts.

A session's device time is 15 minutes in all, the machine's start-up included, and one command runs 10 minutes at
most: the defaults aim at about 10 minutes of device time (start-up, then roughly 1-2 min limits, 1-3 min victim,
1-2 min bayes, 1-4 min em; estimates, not yet measured on a GPU). Give the run a timeout that leaves a few minutes;
every stage writes <out>/gpu-check.json and <out>/gpu-check.md as soon as it finishes, so a timeout keeps what was
done (rerun the rest with --stages). Each stage prints one line with its timing. A stage that fails is recorded
with its error and the next one runs.

Stages (--stages, default all four, in this order):
  limits  benchmarks/speed.py's main into <out>/speed/: every network's forward+backward images/s (the limits),
          the trainer and one round of each craft on the bundled 2,000 rows (--limits victim: only the networks
          the trainers train, no crafts).
  victim  VictimConfig.auto's CUDA victim (ResNet-18 w64, what evaluate() trains on a GPU) on --rows class-balanced
          CIFAR-10 train rows (default all 50,000, from --data) for --epochs (default 30) through training.fit:
          images/s, training and wall seconds, test accuracy on the 10,000 test rows, the fraction of the
          ResNet-18 train_limit of stage limits (or of <out>/speed/speed.json from an earlier run), peak memory.
  bayes   craft(ds, "bayes") with its defaults on the same rows;
  em      craft(ds, "em", mode="samplewise") with its defaults: seconds (reading the rows excluded), rows/s, the
          forward+backward images/s of the work counted from the resolved config (speed.count_work) and its
          fraction of the limits, peak device memory.

    python benchmarks/gpu_check.py --out runs/gpu-check             # on the GPU (--data: a CIFAR-10 Parquet folder)
    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu-check    # tiny sizes: 1-1.5 min on a 2-core CPU

The device machine gets the checkout only: ../shared does not travel, so carry a copy of the Parquet folder inside
the checkout (an ignored folder named in carry) and pass it as --data (--test-data bundled: 9 MB less to carry).
H100 and H200 figures are named as such: the Markdown's title and every JSON stage carry torch.cuda.get_device_name().
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]
import speed  # noqa: E402
from efficacy import DEFAULT_DATA, load_subset  # noqa: E402
from speed_limits import Timed, arch_key, dtype_of, sync  # noqa: E402
from speed_report import environment  # noqa: E402

STAGES = ("limits", "victim", "bayes", "em")
DRY = {"data": "bundled", "rows": 200, "test_rows": 200, "epochs": 1, "limits": "victim", "victim_width": 16,
       "bayes": {"passes": 1}, "em": {"max_iters": 1, "min_iters": 1, "steps": 2, "train_steps": 2, "batch_size": 32}}


def device_name(dev) -> str:
    import torch

    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({environment()['cpu']})"


def victim_config(epochs: int, width: int | None):
    """What evaluate() trains on CUDA (VictimConfig.auto: ResNet-18), also where there is none (the dry run)."""
    from unittest import mock

    from hf_unlearnable.evaluate import VictimConfig

    with mock.patch("torch.cuda.is_available", return_value=True):
        cfg = VictimConfig.auto(epochs)
    cfg.width = width or cfg.width
    return cfg


class Run:
    """The run's state: arguments, device, data (read once), limits, and the results written after every stage."""

    def __init__(self, args):
        import torch

        from hf_unlearnable.training import device

        self.args, self.dev, self.out = args, device(), Path(args.out)
        self._data = None
        now = datetime.datetime.now().isoformat(timespec="seconds")
        self.result = {"script": "benchmarks/gpu_check.py", "date": now,
                       "dry_run": args.dry_run, "device": device_name(self.dev), "card": None,
                       "environment": environment(), "args": vars(args), "stages": {}, "errors": {}, "seconds": 0.0}
        name = self.result["device"]
        cuda_name = name if self.dev.type == "cuda" else None
        self.result["card"] = next((c for c in ("H100", "H200") if c in name), cuda_name)
        self.t0 = time.perf_counter()
        torch.manual_seed(0)

    def data(self):
        if self._data is None:
            a = self.args
            train, test = load_subset(a.data, a.rows // 10, a.test_rows or None)
            if a.test_data != a.data:     # a folder of test.parquet alone will do
                from hf_unlearnable.data import load_cifar10

                test = load_cifar10("test", a.test_data)
                test = test.select(range(min(a.test_rows, len(test)))) if a.test_rows else test
            self._data = train.flatten_indices(), test
        return self._data

    def limits(self) -> dict:
        """(arch, kind, dtype) -> images/s from <out>/speed/speed.json (this run's limits stage or an earlier one)."""
        path = self.out / "speed" / "speed.json"
        if not path.exists():
            return {}
        entries = json.loads(path.read_text())["entries"]
        return {(e["arch"], e["limit"][:-len("_limit")], e["dtype"]): e["images_per_s"]
                for e in entries if e["kind"] == "limit"}

    def write(self) -> None:
        self.result["seconds"] = round(time.perf_counter() - self.t0, 1)
        self.out.mkdir(parents=True, exist_ok=True)
        for name, text in (("gpu-check.json", json.dumps(self.result, indent=1, default=str) + "\n"),
                           ("gpu-check.md", to_markdown(self.result))):
            tmp = self.out / f".{name}.tmp"
            tmp.write_text(text)
            os.replace(tmp, self.out / name)   # whole files only, even when the run is killed


def _memory(dev) -> dict:
    import torch

    peak = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1) if dev.type == "cuda" else None
    return {"peak_device_memory_mib": peak,
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}   # process so far


def _reset_memory(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)


def stage_limits(run: Run) -> dict:
    from hf_unlearnable.evaluate import VictimConfig

    a = run.args
    trainer = VictimConfig.auto(1)          # speed.py's trainer: its limit must be measured
    victim = victim_config(a.epochs, a.victim_width)
    nets = [n for n in speed.NETS if a.limits == "full" or arch_key(n[0], n[1]) in
            {arch_key(trainer.arch, trainer.width), arch_key(victim.arch, victim.width)}]
    if arch_key(victim.arch, victim.width) not in {arch_key(n[0], n[1]) for n in nets}:
        nets.append((victim.arch, victim.width, victim.train.batch_size))
    saved = speed.NETS, speed.CRAFTS
    speed.NETS, speed.CRAFTS = nets, (speed.CRAFTS if a.limits == "full" else [])
    try:
        speed.main(["--out-dir", str(run.out / "speed"), "--budget", str(a.budget)]
                   + (["--quick"] if a.dry_run else []))
    finally:
        speed.NETS, speed.CRAFTS = saved
    r = json.loads((run.out / "speed" / "speed.json").read_text())
    limits = {e["name"]: round(e["images_per_s"], 1) for e in r["entries"] if e["kind"] == "limit"}
    return {"outputs": ["speed/speed.json", "speed/speed.md", "speed/speed.png"], "networks": [list(n) for n in nets],
            "crafts": [c[0] for c in speed.CRAFTS] if a.limits == "full" else [], "limits_images_per_s": limits,
            "fraction_of_limit": r["fraction_of_limit"], "seconds": r["seconds"],
            "summary": f"{len(limits)} limits, trainer at {100 * r['fraction_of_limit']['trainer']:.1f} % of its limit"}


def stage_victim(run: Run) -> dict:
    import torch

    from hf_unlearnable import training
    from hf_unlearnable._data import load_labelled
    from hf_unlearnable._feed import resident
    from hf_unlearnable.surrogates.nets import build

    cfg = victim_config(run.args.epochs, run.args.victim_width)
    train, test = run.data()
    t0 = time.perf_counter()
    P = load_labelled(train, desc="Reading train")
    T = load_labelled(test, desc="Reading test", defines_classes=False)
    x, y = training.nchw(P.images), torch.from_numpy(P.labels)
    tx, ty = training.nchw(T.images), torch.from_numpy(T.labels)
    reading = time.perf_counter() - t0
    _reset_memory(run.dev)
    torch.manual_seed(0)
    model = build(cfg.arch, P.num_classes, cfg.width)
    on_device = resident(run.dev, training._RESIDENT_MAX_SHARE, x, y)
    hist = training.fit(model, x, y, cfg.train, seed=0, progress=False, desc="gpu_check victim")
    t_eval = time.perf_counter()
    acc = training.accuracy(model, tx, ty)
    sync(run.dev)
    evaluating, wall = time.perf_counter() - t_eval, time.perf_counter() - t0
    arch, dt = arch_key(cfg.arch, cfg.width), dtype_of(cfg.train.bf16)
    rate, limit = len(x) * cfg.train.epochs / hist["seconds"], run.limits().get((arch, "train", dt))
    return {"arch": arch, "dtype": dt, "rows": len(x), "test_rows": len(tx), "epochs": cfg.train.epochs,
            "batch_size": cfg.train.batch_size, "images_per_s": rate, "train_seconds": round(hist["seconds"], 2),
            "reading_seconds": round(reading, 2), "test_seconds": round(evaluating, 2), "wall_seconds": round(wall, 2),
            "test_accuracy": acc, "train_accuracy": hist["train_accuracy"], "train_limit_images_per_s": limit,
            "fraction_of_limit": rate / limit if limit else None, "images_resident_on_device": on_device,
            "victim": cfg.to_dict(), **_memory(run.dev),
            "summary": f"{arch} {cfg.train.epochs} epoch(s) x {len(x)} rows: {rate:,.0f} img/s, "
                       f"{hist['seconds']:.1f} s training, {wall:.1f} s wall, test accuracy {100 * acc:.2f} %"
                       + (f", {100 * rate / limit:.1f} % of train_limit" if limit else "")}


def stage_craft(run: Run, method: str, options: dict) -> dict:
    import importlib

    from hf_unlearnable import craft

    ds, _ = run.data()
    timer = Timed(run.dev)
    timer.wrap(importlib.import_module("hf_unlearnable._craft"), "load_labelled", "reading")
    _reset_memory(run.dev)
    t0 = time.perf_counter()
    try:
        noise = craft(ds, method, seed=0, **options)
    finally:
        sync(run.dev)
        total = time.perf_counter() - t0
        timer.restore()
    cfg, stats = noise.config.method_config, noise.config.stats
    reading = timer.seconds.get("reading", 0.0)
    seconds = total - reading
    parts, counted = speed.count_work(method, cfg, stats, len(ds))
    fb_images = sum(p[1] for p in parts if p[4])
    # bayes runs the bundled ConvNet surrogate unless given one (as speed.run_craft)
    arch = (arch_key("convnet", None) if method == "bayes" and cfg.get("surrogate") is None
            else arch_key(cfg["surrogate_arch"], cfg["surrogate_width"]))
    limits = run.limits()
    at_limit = None
    if all((arch, k, p[3]) in limits for p in parts for k in (p[2], "forward")):
        at_limit = sum(speed._seconds_at(parts, lambda kind, dt, batch: limits[(arch, kind, dt)]))
    rounds = stats.get("rounds", stats.get("passes"))
    return {"method": method, "options": options, "rows": len(ds), "arch": arch, "dtype": parts[0][3],
            "seconds": round(seconds, 2), "reading_seconds": round(reading, 2), "rows_per_s": len(ds) / seconds,
            "images_per_s": fb_images / seconds, "limit_images_per_s": fb_images / at_limit if at_limit else None,
            "fraction_of_limit": at_limit / seconds if at_limit else None, "rounds_or_passes": rounds,
            "counted": counted, "stats": {k: v for k, v in stats.items() if k != "history"}, "method_config": cfg,
            **_memory(run.dev),
            "summary": f"{len(ds)} rows, {rounds} round(s)/pass(es): {seconds:.1f} s, {len(ds) / seconds:,.0f} rows/s, "
                       f"{fb_images / seconds:,.0f} fwd+bwd img/s"
                       + (f", {100 * at_limit / seconds:.1f} % of its limits" if at_limit else "")}


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f} %"


def _mib(v) -> str:
    return "–" if v is None else f"{v:,.0f} MiB"


def to_markdown(r: dict) -> str:
    env, st = r["environment"], r["stages"]
    lines = [f"# GPU check on {r['device']} ({r['date']}, hf_unlearnable {env['hf_unlearnable']}"
             f"{' @ ' + env['git_commit'] if env['git_commit'] else ''}, torch {env['torch']})", "",
             f"Every figure below was measured on **{r['device']}**"
             + (f" ({r['card']} figures)" if r["card"] else "") + f"; run took {r['seconds']} s"
             + (" (--dry-run: tiny sizes, the numbers mean nothing)" if r["dry_run"] else "")
             + ". Generated by benchmarks/gpu_check.py.", "",
             "| stage | what | images/s | seconds | fraction of limit | peak device memory | result |",
             "|---|---|---|---|---|---|---|"]
    if "limits" in st:
        s = st["limits"]
        lines.append(f"| limits | benchmarks/speed.py: {len(s['limits_images_per_s'])} limits, the trainer"
                     f"{', crafts on 2,000 bundled rows' if s['crafts'] else ''} (speed/speed.md) | – | "
                     f"{s['seconds']} "
                     f"| trainer {_pct(s['fraction_of_limit'].get('trainer'))} | – | "
                     + ", ".join(f"{k} {v:,.0f}" for k, v in s["limits_images_per_s"].items() if "train_limit" in k)
                     + " |")
    if "victim" in st:
        s = st["victim"]
        lines.append(f"| victim | {s['arch']} {s['dtype']}, {s['epochs']} epoch(s) x {s['rows']:,} rows, batch "
                     f"{s['batch_size']} | {s['images_per_s']:,.0f} | {s['train_seconds']} training, "
                     f"{s['wall_seconds']} wall | {_pct(s['fraction_of_limit'])} of train_limit | "
                     f"{_mib(s['peak_device_memory_mib'])} | test accuracy {100 * s['test_accuracy']:.2f} % "
                     f"({s['test_rows']:,} rows) |")
    for name in ("bayes", "em"):
        if name in st:
            s = st[name]
            call = f"craft(ds, \"{s['method']}\"" + "".join(f", {k}={v!r}" for k, v in s["options"].items()) + ")"
            lines.append(f"| {name} | {call},"
                         f" {s['rows']:,} rows, {s['rounds_or_passes']} round(s)/pass(es), {s['arch']} {s['dtype']} | "
                         f"{s['images_per_s']:,.0f} ({s['rows_per_s']:,.0f} rows/s) | {s['seconds']} (+ "
                         f"{s['reading_seconds']} reading) | {_pct(s['fraction_of_limit'])} | "
                         f"{_mib(s['peak_device_memory_mib'])} | {s['counted']} |")
    for name, err in r["errors"].items():
        lines.append(f"| {name} | failed | – | – | – | – | {err['error'].splitlines()[0].replace('|', '/')} |")
    lines += ["", "images/s: forward+backward images per second (the victim: rows x epochs / training seconds; a "
              "craft: its counted work, speed.count_work). Fraction of limit: against the limits of the limits stage "
              "(speed/speed.json, reference batch sizes), for a craft the seconds its counted work takes at the limits "
              "over the seconds it took, reading the rows excluded. Peak device memory: "
              "torch.cuda.max_memory_allocated during the stage.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu"), help="results folder")
    ap.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    ap.add_argument("--dry-run", action="store_true",
                    help="tiny sizes (200 bundled rows, 1 epoch, 2 PGD steps): a CPU smoke run")
    ap.add_argument("--data", default=None, help=f"CIFAR-10 Parquet folder or 'bundled' (default {DEFAULT_DATA})")
    ap.add_argument("--test-data", default=None, help="where test.parquet is, or 'bundled' (its 932 exact test "
                    "rows: 9 MB less to carry); default --data")
    ap.add_argument("--rows", type=int, default=None, help="class-balanced train rows (default 50000: all)")
    ap.add_argument("--test-rows", type=int, default=None, help="test rows (default 0: all 10,000)")
    ap.add_argument("--epochs", type=int, default=None, help="victim epochs (default 30)")
    ap.add_argument("--victim-width", type=int, default=None, help="ResNet-18 width (default VictimConfig.auto's 64)")
    ap.add_argument("--limits", choices=("full", "victim"), default=None,
                    help="full: speed.py as it is; victim: only the trainers' networks, no crafts (the dry run's)")
    ap.add_argument("--budget", type=float, default=1.0, help="seconds each limit is timed for (speed.py --budget)")
    ap.add_argument("--bayes-passes", type=int, default=None, help="bayes passes (default the library's)")
    ap.add_argument("--em-max-iters", type=int, default=None, help="em round ceiling (default the library's)")
    args = ap.parse_args(argv)
    dry = DRY if args.dry_run else {"data": str(DEFAULT_DATA), "rows": 50000, "test_rows": 0, "epochs": 30,
                                     "limits": "full", "victim_width": None, "bayes": {}, "em": {}}
    for k in ("data", "rows", "test_rows", "epochs", "limits", "victim_width"):
        if getattr(args, k) is None:
            setattr(args, k, dry[k])
    args.test_data = args.test_data or args.data
    crafts = {"bayes": dict(dry["bayes"]), "em": {"mode": "samplewise", **dry["em"]}}
    if args.bayes_passes:
        crafts["bayes"]["passes"] = args.bayes_passes
    if args.em_max_iters:
        crafts["em"].update(max_iters=args.em_max_iters, min_iters=min(args.em_max_iters, 10))

    for flag, folder, split in (("--data", args.data, "train"), ("--test-data", args.test_data, "test")):
        if (set(args.stages) - {"limits"} and folder not in ("bundled", "hub")
                and not (Path(folder).expanduser() / f"{split}.parquet").exists()):
            ap.error(f"{flag} {folder}: no {split}.parquet there (the device machine gets the checkout only: carry a "
                     "copy of the Parquet folder inside it and name that)")

    import datasets

    datasets.disable_progress_bars()
    run = Run(args)
    print(f"gpu_check on {run.result['device']}: stages {' '.join(args.stages)}, {args.rows} rows from {args.data}"
          f"{' (dry run)' if args.dry_run else ''}", flush=True)
    for stage in STAGES:
        if stage not in args.stages:
            continue
        t0 = time.perf_counter()
        try:
            if stage == "limits":
                res = stage_limits(run)
            elif stage == "victim":
                res = stage_victim(run)
            else:
                res = stage_craft(run, stage, crafts[stage])
        except Exception as exc:  # noqa: BLE001  (one failed stage must not cost the others' device time)
            run.result["errors"][stage] = {"error": f"{type(exc).__name__}: {exc}",
                                           "traceback": traceback.format_exc()[-4000:]}
            print(f"{stage}: FAILED after {time.perf_counter() - t0:.1f} s: {type(exc).__name__}: {exc}", flush=True)
        else:
            res.update(device=run.result["device"], stage_seconds=round(time.perf_counter() - t0, 2))
            run.result["stages"][stage] = res
            print(f"{stage}: {res['summary']} (stage {res['stage_seconds']} s)", flush=True)
        run.write()
    print(f"wrote {run.out / 'gpu-check.json'} and gpu-check.md ({run.result['seconds']} s)", flush=True)
    return 1 if run.result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
