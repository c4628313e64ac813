"""Crafting across processes: the same `hf-unlearnable craft` (bayes, or em sample-wise) run as 1 plain process and
as k processes under torchrun (what `accelerate launch` starts, one process per GPU), on the same rows, in one run.

Reported per run: the craft's own time (from the CLI's log, so process start-up is not counted), the images/s that
gives (rows x passes / seconds, i.e. rows per second per pass), the wall time including start-up, the largest peak
RSS of any one process, and how many noise elements differ from the single process with all threads and with one
thread. torchrun gives each of its processes one thread (OMP_NUM_THREADS=1), so the one-thread single process is the
one whose bytes the split runs must equal; against the all-threads process, CPU kernels may round differently with
another thread count. On a GPU machine, pass --processes 1 N for N GPUs.

    python benchmarks/processes.py                     # bayes: 8,000 CIFAR-10 rows, 2 passes, 1 vs 2 processes
    python benchmarks/processes.py --method em --per-class 200 --option max_iters=2 --option min_iters=2
    python benchmarks/processes.py --data bundled --per-class 100 --option passes=1 --option subset_size=250  # smoke

Writes benchmarks/results/processes[-em].json and .md; crafted noise goes to --work.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_PEAK = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
         "print('peak_rss_kb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
         "sys.exit(r.returncode)")


def run_craft(method: str, processes: int, data: Path, out: Path, options: dict, threads: int | None = None) -> dict:
    """One craft as `processes` processes; returns its times and the largest per-process peak RSS."""
    cli = ["-m", "hf_unlearnable", "craft", "--data", str(data), "--method", method, "--output", str(out),
           "--overwrite"]
    for key, value in options.items():
        cli += ["--option", f"{key}={value}"]
    if processes == 1:
        cmd = [sys.executable] + cli
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)] + cli
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _PEAK] + cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"craft with {processes} processes failed:\n{done.stderr[-3000:]}")
    seconds = float(re.search(r"crafted in ([0-9.]+) s", done.stderr).group(1))
    peak = int(re.search(r"peak_rss_kb (\d+)", done.stderr).group(1))
    shares = re.findall(r"process (\d+) of \d+ (?:ascended|updated) (\d+) (?:minibatches|noise batches) in",
                        done.stderr)
    return {"processes": processes, "threads_per_process": threads or (1 if processes > 1 else os.cpu_count()),
            "craft_seconds": round(seconds, 1), "wall_seconds": round(wall, 1),
            "peak_rss_gb_per_process": round(peak / 2**20, 2),
            "minibatches_per_process": {int(r): int(n) for r, n in shares} or None}


def to_markdown(res: dict) -> str:
    lines = [f"# {res['method']} craft across processes (benchmarks/processes.py)", "",
             f"{res['rows']} rows of {res['data']}, options {json.dumps(res['options'])}; {res['machine']}; "
             f"{res['date']}. Images/s = rows x {res['sweeps']} / craft seconds.", "",
             "| processes × threads | craft s | images/s (per pass or round) | speed-up | wall s (with start-up) | "
             "peak RSS per process | (mini)batches done per process | elements ≠ 1 × all threads | "
             "≠ 1 × 1 thread |",
             "|---|---|---|---|---|---|---|---|---|"]
    base = res["runs"][0]["craft_seconds"]
    for r in res["runs"]:
        share = r["minibatches_per_process"]
        lines.append(f"| {r['processes']} × {r['threads_per_process']} | {r['craft_seconds']} | "
                     f"{r['images_per_second']:.1f} | "
                     f"{base / r['craft_seconds']:.2f}× | {r['wall_seconds']} | {r['peak_rss_gb_per_process']} GB | "
                     f"{' / '.join(str(share[k]) for k in sorted(share)) if share else 'all'} | "
                     f"{r['differ_from_first']} | {r.get('differ_from_one_thread', '–')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "cifar10"),
                    help="a folder with train.parquet, or 'bundled'")
    ap.add_argument("--per-class", type=int, default=800, help="train rows per class (the first ones)")
    ap.add_argument("--method", choices=["bayes", "em"], default="bayes", help="em runs sample-wise")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="craft options (default for bayes: passes=2; for em: max_iters=min_iters=2)")
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--no-one-thread-reference", dest="one_thread_reference", action="store_false",
                    help="skip the single process with one thread (the bytes the split runs must equal)")
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench-processes"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    if args.processes[0] != 1:
        raise SystemExit("--processes must start with 1: the single process is the baseline")

    from hf_unlearnable import load_noise
    from hf_unlearnable.cli import parse_options
    from hf_unlearnable.data import load_cifar10, per_class_rows

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    train = load_cifar10("train", args.data)
    rows = train.select(per_class_rows(train["label"], 0, args.per_class))
    data = work / f"data-{hashlib.sha1(str(Path(args.data).resolve()).encode()).hexdigest()[:8]}-{args.per_class}"
    if not data.exists():
        rows.save_to_disk(str(data))
    options = {"passes": 2} if args.method == "bayes" else {"mode": "samplewise", "max_iters": 2, "min_iters": 2}
    options.update(parse_options(args.option))     # the CLI's own reading of --option KEY=VALUE
    sweeps = options["passes"] if args.method == "bayes" else options["max_iters"]
    res = {"method": args.method, "data": args.data, "rows": len(rows), "options": options, "sweeps": sweeps,
           "date": time.strftime("%Y-%m-%d"),
           "machine": f"{os.cpu_count()} CPU cores" + (", CUDA" if _cuda() else ""), "runs": []}
    first = one_thread = None
    configs = [(1, None)] + ([(1, 1)] if args.one_thread_reference else []) + [(k, None) for k in args.processes[1:]]
    for k, threads in configs:
        out = work / (f"noise-{args.method}-{k}" + ("" if threads is None else f"x{threads}"))
        r = run_craft(args.method, k, data, out, options, threads)
        steps = load_noise(str(out)).steps
        first = steps if first is None else first
        if k == 1 and threads == 1:
            one_thread = steps
        r["images_per_second"] = len(rows) * sweeps / r["craft_seconds"]
        r["differ_from_first"] = int((steps != first).sum())
        if one_thread is not None:
            r["differ_from_one_thread"] = int((steps != one_thread).sum())
        res["runs"].append(r)
        print(json.dumps(r), flush=True)
    out_dir = Path(args.out)
    name = "processes" + ("" if args.method == "bayes" else f"-{args.method}")
    (out_dir / f"{name}.json").write_text(json.dumps(res, indent=1) + "\n")
    (out_dir / f"{name}.md").write_text(to_markdown(res))
    print(to_markdown(res))
    return 0 if all(r.get("differ_from_one_thread", 0) == 0 for r in res["runs"]) else 1


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    raise SystemExit(main())
