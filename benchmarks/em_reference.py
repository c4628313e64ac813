"""em's sample-wise noise pass beside the reference code (HanxunH/Unlearnable-Examples), images/s side by side.

One noise pass = the min-min's noise update over --rows CIFAR-10 train rows (class-balanced, the same rows for every
run) against a fixed, frozen surrogate: batches of 512 rows (perturbation.py's --train_batch_size), each taking
--steps signed PGD steps (step 0.8/255, epsilon 8/255: the reference's defaults), starting from zero noise (its
default, no --random_start, and em.craft's). Timed, alternating within every repeat (reference first, then each
library run, so drift hits all):
  reference             its toolbox.PerturbationTool(...).min_min_attack on its models.ResNet.ResNet18 (eval mode,
                        weights frozen, as sample_wise_perturbation runs it), imported from --reference via sys.path
  library resnet18 fp32 em's code path, methods.em.pgd_min (what EM._noise_step calls; signed_pgd inside) on the
                        library's resnet18 (surrogates.nets.build, training.prepare as StepTrainer does) holding the
                        reference network's weights, fp32
  library resnet18 bf16 the same in bf16 autocast (the library's default), only where training.fast_bf16 holds
  default surrogate     the same pgd_min on the bundled ConvNet (surrogates.load_surrogate(None)), fp32 and bf16
images/s = rows / seconds of one pass (each row taking --steps steps). Nothing of the reference's scripts or pickles
runs; its package models/__init__.py (mlconfig, torchvision and every other net) is skipped, see load_reference.

    git clone https://github.com/HanxunH/Unlearnable-Examples /tmp/ue-ref
    python benchmarks/em_reference.py --reference /tmp/ue-ref [--rows 1000] [--steps 20] [--threads 2] \\
        [--repeats 3] [--data ../shared/data/cifar10|bundled] [--out-dir benchmarks/results]

Writes em-reference.json and em-reference.md to --out-dir.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_report import environment  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10"
EPSILON, STEP_SIZE, BATCH = 8 / 255, 0.8 / 255, 512    # perturbation.py: --epsilon 8, --step_size 0.8 (/255), batch 512
REF = "reference"


def load_reference(path: str):
    """(PerturbationTool, ResNet18) from a checkout of HanxunH/Unlearnable-Examples, imported via sys.path.

    models/__init__.py imports mlconfig and torchvision (neither installed here, neither needed) and registers every
    net with mlconfig, so importing models.ResNet the ordinary way fails. The stub: an empty package module `models`
    whose __path__ is the checkout's models/ folder, put in sys.modules, so that only models/ResNet.py itself runs
    (it imports torch and math only). toolbox.py imports numpy and torch only and is imported as it is."""
    root = str(Path(path).resolve())
    if not (Path(root) / "toolbox.py").is_file() or not (Path(root) / "models" / "ResNet.py").is_file():
        raise SystemExit(f"--reference {path}: no toolbox.py and models/ResNet.py there (a checkout of "
                         "HanxunH/Unlearnable-Examples is expected).")
    for name in ("toolbox", "models", "models.ResNet"):      # another checkout's modules, imported before
        sys.modules.pop(name, None)
    package = types.ModuleType("models")                   # stub for models/__init__.py only (see above)
    package.__path__ = [str(Path(root) / "models")]
    sys.modules["models"] = package
    sys.path.insert(0, root)
    try:
        toolbox, resnet = importlib.import_module("toolbox"), importlib.import_module("models.ResNet")
    finally:
        sys.path.remove(root)
    return toolbox.PerturbationTool, resnet.ResNet18


def load_rows(data: str, rows: int):
    """The first ceil(rows / 10) train rows of every class (per_class_rows, as speed.py), the first `rows` of them,
    as float [0, 1] NCHW images and int64 labels."""
    import numpy as np
    import torch

    from hf_unlearnable._images import to_tensor
    from hf_unlearnable.data import load_cifar10, per_class_rows

    src = load_cifar10("train", str(data))
    ds = src.select(per_class_rows(src["label"], 0, -(-rows // 10))[:rows])
    if len(ds) < rows:
        raise SystemExit(f"--rows {rows}: the data holds only {len(ds)} class-balanced rows.")
    images = to_tensor([np.asarray(im.convert("RGB")) for im in ds["img"]])
    return images, torch.as_tensor(np.asarray(ds["label"]), dtype=torch.long)


def copy_weights(src, dst) -> bool:
    """src's weights into dst where both list the same tensor shapes in the same order (both CIFAR ResNet-18s)."""
    a, b = list(src.state_dict().values()), dst.state_dict()
    if len(a) != len(b) or any(t.shape != u.shape for t, u in zip(a, b.values())):
        return False
    dst.load_state_dict(dict(zip(b.keys(), a)))
    return True


def noise_pass(step, x, y, delta, steps, dev):
    """One noise pass of `steps` PGD steps over the rows in batches of BATCH: (seconds, the effective noise x' - x)."""
    import torch

    out = torch.empty_like(delta)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for s in range(0, len(x), BATCH):
        out[s:s + BATCH] = step(x[s:s + BATCH], y[s:s + BATCH], delta[s:s + BATCH], steps)
    sync()
    return time.perf_counter() - t0, out


def build_runs(reference: str, dev) -> tuple[dict, dict]:
    """{name: step(x, y, delta, steps) -> effective delta} for every run, and facts about the networks."""
    import torch

    from hf_unlearnable.methods.em import pgd_min
    from hf_unlearnable.surrogates import load_surrogate
    from hf_unlearnable.surrogates.nets import build
    from hf_unlearnable.training import TrainConfig, fast_bf16, prepare

    PerturbationTool, RefResNet18 = load_reference(reference)
    torch.manual_seed(0)
    ref_model = RefResNet18(num_classes=10).to(dev).eval()
    for p in ref_model.parameters():        # sample_wise_perturbation's noise update: eval mode, weights frozen
        p.requires_grad = False
    tool = PerturbationTool(epsilon=EPSILON, num_steps=1, step_size=STEP_SIZE)
    optimizer, criterion = torch.optim.SGD(ref_model.parameters(), lr=0.1), torch.nn.CrossEntropyLoss()

    def ref_step(x, y, delta, steps):
        tool.num_steps = steps
        perturbed, _eta = tool.min_min_attack(x, y, ref_model, optimizer, criterion, random_noise=delta)
        return perturbed.detach() - x

    lib = build("resnet18", 10)
    same_weights = copy_weights(ref_model, lib)
    lib = prepare(lib, TrainConfig(), dev)          # what StepTrainer does with em.craft's fresh surrogate
    default = load_surrogate(None).to(dev).eval()   # as EM.perturb uses it

    def lib_step(model, bf16):
        return lambda x, y, d, steps: pgd_min(model, x, y, d, epsilon=EPSILON, step_size=STEP_SIZE, steps=steps,
                                              bf16=bf16)

    runs = {REF: ref_step, "library resnet18 fp32": lib_step(lib, False)}
    precisions = [False, True] if fast_bf16(dev.type) else [False]
    if fast_bf16(dev.type):
        runs["library resnet18 bf16"] = lib_step(lib, True)
    for bf16 in precisions:
        runs[f"default surrogate {'bf16' if bf16 else 'fp32'}"] = lib_step(default, bf16)
    nets = {REF: ref_model, "library resnet18": lib, "default surrogate": default}
    return runs, {"same_weights": same_weights, "default_surrogate_arch": default.config.arch,
                  "parameters": {k: sum(p.numel() for p in m.parameters()) for k, m in nets.items()},
                  "fast_bf16": fast_bf16(dev.type)}


def git_commit(path: str) -> str | None:
    try:
        return subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def to_markdown(result: dict) -> str:
    c, med, ratio, env = result["config"], result["medians"], result["ratio_by_run"], result["environment"]
    lines = ["# em sample-wise noise pass against the reference code", "",
             f"{c['rows']:,} CIFAR-10 train rows, {c['steps']} PGD steps (step {c['step_size']:.5f}, epsilon "
             f"{c['epsilon']:.5f}), batches of up to {c['batch']} rows, {c['threads']} threads, {c['repeats']} "
             f"alternating repeats; {env['cpu']}, torch {env['torch']}, load average "
             f"{env['load_average_before'] or 0:.1f} before, {env['load_average_after'] or 0:.1f} after.", "",
             "| run | images/s per repeat | median images/s | / reference |", "|---|---|---:|---:|"]
    for name, runs in result["images_per_s"].items():
        r = ratio.get(name)
        lines.append(f"| {name} | {', '.join(f'{v:.2f}' for v in runs)} | {med[name]:.2f} | "
                     f"{'' if r is None else f'{r:.2f}x'} |")
    agree = ", ".join(f"{k} {v:.3f}" for k, v in result["noise_agreement_with_reference"].items())
    lines += ["", f"- Compared: the reference's `PerturbationTool.min_min_attack` on its `ResNet18` (commit "
              f"{(result['reference']['git_commit'] or 'unknown')[:12]}) against the library's `methods.em.pgd_min` "
              "(what em's sample-wise noise pass calls) on its own resnet18 and on the bundled default surrogate "
              f"({result['networks']['default_surrogate_arch']}).",
              "- How: the same rows, batches, steps, epsilon and step size, both starting from zero noise against a "
              "fixed network in eval mode; images/s = rows / seconds of one whole pass (each row taking "
              f"{c['steps']} steps); runs alternate (reference, then each library run) in every repeat.",
              f"- The two ResNet-18s hold the same weights: {result['networks']['same_weights']} (parameters "
              f"{result['networks']['parameters']}); fraction of noise values equal to the reference's (1e-6): "
              f"{agree or 'not compared (different weights)'}.",
              "- bf16 runs only where training.fast_bf16 holds (native AVX-512-bf16/AMX); the library's default is "
              "bf16 autocast there, fp32 elsewhere.", ""]
    if max(env["load_average_before"] or 0, env["load_average_after"] or 0) > c["threads"] + 0.5:
        lines.insert(-1, "- The machine was shared (load average above the threads used): the spread between "
                         "repeats is that noise; alternating spreads it over every run, so take the ratios as rough.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", required=True, help="a checkout of HanxunH/Unlearnable-Examples")
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="CIFAR-10 Parquet folder, or 'bundled'")
    ap.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    import datasets
    import torch

    from hf_unlearnable.training import device

    datasets.disable_progress_bars()
    torch.set_num_threads(args.threads)
    dev = device()
    x, y = load_rows(args.data, args.rows)
    x, y = x.to(dev), y.to(dev)
    zero = torch.zeros_like(x)
    runs, facts = build_runs(args.reference, dev)
    env = environment()                 # after set_num_threads: records the threads the runs use
    for step in runs.values():          # first kernels (oneDNN primitives at these shapes): one step, untimed
        noise_pass(step, x[:BATCH], y[:BATCH], zero[:BATCH], 1, dev)
    times: dict[str, list[float]] = {name: [] for name in runs}
    noise: dict[str, torch.Tensor] = {}
    for r in range(args.repeats):
        for name, step in runs.items():
            seconds, out = noise_pass(step, x, y, zero, args.steps, dev)
            times[name].append(seconds)
            noise.setdefault(name, out)
            print(f"repeat {r + 1}/{args.repeats} {name}: {args.rows / seconds:.2f} images/s ({seconds:.1f} s)",
                  flush=True)
    env["load_average_after"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    ips = {name: [round(args.rows / s, 4) for s in ts] for name, ts in times.items()}
    med = {name: statistics.median(v) for name, v in ips.items()}
    by_run = {name: med[name] / med[REF] for name in runs if name != REF}
    lib_default = "bf16" if facts["fast_bf16"] else "fp32"
    ratio = {"library_resnet18_fp32": by_run["library resnet18 fp32"],
             "library_resnet18_bf16": by_run.get("library resnet18 bf16"),
             "default_surrogate": by_run[f"default surrogate {lib_default}"],
             "default_surrogate_fp32": by_run["default surrogate fp32"],
             "default_surrogate_bf16": by_run.get("default surrogate bf16")}
    agree = ({name: float(((noise[name] - noise[REF]).abs() <= 1e-6).float().mean()) for name in runs
              if name.startswith("library")} if facts["same_weights"] else {})
    result = {"benchmark": "em-reference", "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "command": "python benchmarks/em_reference.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "environment": env,
              "reference": {"repo": "HanxunH/Unlearnable-Examples", "path": str(Path(args.reference).resolve()),
                            "git_commit": git_commit(args.reference)},
              "config": {"rows": args.rows, "steps": args.steps, "epsilon": EPSILON, "step_size": STEP_SIZE,
                         "batch": BATCH, "threads": torch.get_num_threads(), "repeats": args.repeats,
                         "data": args.data, "start": "zero noise", "order": list(runs)},
              "networks": facts, "seconds": times, "images_per_s": ips, "medians": med,
              "image_steps_per_s_median": {k: v * args.steps for k, v in med.items()},
              "ratio": ratio, "ratio_by_run": by_run, "noise_agreement_with_reference": agree,
              "ratio_note": "median images/s of the run / median images/s of the reference; default_surrogate at "
                            f"the library's default precision here ({lib_default})"}
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "em-reference.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "em-reference.md").write_text(to_markdown(result))
    print(json.dumps(ratio, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
