"""Speed and memory of the Bayes-error estimator (`bayes_error`, value + gradient), against its autograd form.

The estimator is the kernel part of every `bayes` ascent step: one call per minibatch and augmentation draw on
2 x `subset_size` points (the minibatch and its clean anchors: 4,096 with craft's defaults), and one call on the
whole set before and after a craft (value only). Features are the bundled default surrogate's on real CIFAR-10
rows, scaled as craft scales them, so the distances (and how many kernel weights underflow) are those of a craft.

Both implementations run in this one process, one after the other, on the same features:
- `autograd`: the estimator as the library computed it until session 12: the value chunk by chunk without a
  graph, then backward re-runs each chunk under autograd; `exp` of every log-weight as it is;
- `library`: `hf_unlearnable.methods.bayes.bayes_error` as it stands.
Each case runs in a fresh process (spawn) so its peak RSS is its own; the time is the median of `--repeat` calls
after one warm-up call.

    python benchmarks/estimator.py                      # sizes 4096 and 10000 on ../shared/data/cifar10
    python benchmarks/estimator.py --sizes 512 --data bundled --repeat 1     # smoke

Writes benchmarks/results/estimator.json and estimator.md.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from efficacy import DEFAULT_DATA, write_results  # noqa: E402


def autograd_bayes_error(z, labels, num_classes: int, sigma: float, chunk_size: int):
    """The reference: the same estimate and gradient, by autograd over each chunk's plain formula."""
    import torch
    import torch.nn.functional as F

    onehot = F.one_hot(labels.long(), num_classes).to(z.dtype)

    def error_sum(zz, start, stop):
        rows = torch.arange(start, stop)
        zr = zz[start:stop]
        d2 = (zr.pow(2).sum(1, keepdim=True) + zz.pow(2).sum(1)[None, :] - 2 * zr @ zz.T).clamp_min(0)
        logit = -d2 / (2 * sigma * sigma)
        mask = torch.zeros_like(logit, dtype=torch.bool)
        mask[torch.arange(len(rows)), rows] = True
        logit = logit.masked_fill(mask, float("-inf"))
        w = torch.exp(logit - logit.max(1, keepdim=True).values.detach())
        num = w @ onehot
        return (1 - (num / num.sum(1, keepdim=True)).max(1).values).sum()

    class Fn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, zz):
            ctx.save_for_backward(zz)
            with torch.no_grad():
                return sum(error_sum(zz, s, min(s + chunk_size, len(zz))) for s in range(0, len(zz), chunk_size)) \
                    / len(zz)

        @staticmethod
        def backward(ctx, grad_out):
            (zz,) = ctx.saved_tensors
            grad = torch.zeros_like(zz)
            with torch.enable_grad():
                for s in range(0, len(zz), chunk_size):
                    leaf = zz.detach().requires_grad_(True)
                    (g,) = torch.autograd.grad(error_sum(leaf, s, min(s + chunk_size, len(zz))) / len(zz), leaf)
                    grad += g
            return grad * grad_out

    return Fn.apply(z)


def _case(job: dict) -> dict:
    """Fresh process: features of `size` rows, then warm-up + timed calls of one implementation."""
    import numpy as np
    import torch
    from safetensors.torch import load_file

    from hf_unlearnable.methods.bayes import bayes_error

    torch.set_num_threads(job["threads"])
    t = load_file(job["features"])
    z, y = t["z"][:job["size"]], t["y"][:job["size"]]

    def call():
        zz = z.clone().requires_grad_(job["gradient"])
        if job["impl"] == "library":
            v = bayes_error(zz, y, 10, sigma=job["sigma"], chunk_size=job["chunk"])
        else:
            v = autograd_bayes_error(zz, y, 10, job["sigma"], job["chunk"])
        g = torch.autograd.grad(v, zz)[0] if job["gradient"] else None
        return float(v.detach()), g

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    value, grad = call()
    times = []
    for _ in range(job["repeat"]):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    out = {k: job[k] for k in ("impl", "size", "gradient", "chunk")}
    out.update(seconds=float(np.median(times)), points_per_second=job["size"] / float(np.median(times)),
               value=value, peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               estimator_rss_mib=(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024)
    if grad is not None:
        from safetensors.torch import save_file

        save_file({"g": grad.contiguous()}, job["grad_out"])
    return out


def _features(data: str, size: int, path: Path) -> None:
    """The bundled surrogate's features of `size` class-balanced train rows, scaled by their max-abs (as craft)."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from hf_unlearnable._images import decode_images
    from hf_unlearnable.data import load_cifar10, per_class_rows
    from hf_unlearnable.methods.bayes import feature_scale
    from hf_unlearnable.surrogates import load_surrogate
    from hf_unlearnable.training import nchw, to_float

    train = load_cifar10("train", data)
    per_class = -(-size // 10)
    keep = per_class_rows(train["label"], 0, per_class)
    if len(keep) < size:
        raise SystemExit(f"{data} has only {len(keep)} class-balanced rows; asked for {size}.")
    rows = train.select(keep)
    images = np.stack(decode_images(rows["img"], "img"))
    labels = torch.as_tensor(np.asarray(rows["label"]))
    order = torch.as_tensor(np.random.default_rng(0).permutation(len(keep)))   # classes interleaved, any prefix
    sur = load_surrogate(None).eval()
    with torch.no_grad():
        z = torch.cat([sur.features(to_float(nchw(images[s:s + 1000]), "cpu")) for s in range(0, len(images), 1000)])
    save_file({"z": (z / feature_scale(z))[order].contiguous(), "y": labels[order].contiguous()}, str(path))


def to_markdown(r: dict) -> str:
    lines = [f"# Bayes-error estimator ({r['date']}, hf_unlearnable {r['library_version']}, torch {r['torch']}, "
             f"{r['threads']} threads)", "",
             f"Features: the bundled default surrogate's ({r['feature_dim']}-d, max-abs scaled) on class-balanced "
             f"CIFAR-10 train rows ({r['data']}); sigma {r['sigma']}, chunk {r['chunk']}; median of {r['repeat']} "
             "calls after a warm-up, each case in its own process.", "",
             "| points | value + gradient | autograd (s) | library (s) | speed-up | points/s (library) | "
             "peak RSS autograd / library (MiB; in brackets: added by the estimator) | value difference | "
             "gradient max relative difference |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in r["comparisons"]:
        a, b = c["autograd"], c["library"]
        grad = f"{c['gradient_max_rel_diff']:.1e}" if c["gradient_max_rel_diff"] is not None else "–"
        lines.append(f"| {c['size']} | {'yes' if c['gradient'] else 'value only'} | {a['seconds']:.3f} | "
                     f"{b['seconds']:.3f} | **{a['seconds'] / b['seconds']:.1f}x** | {b['points_per_second']:,.0f} | "
                     f"{a['peak_rss_mib']:.0f} ({a['estimator_rss_mib']:.0f}) / {b['peak_rss_mib']:.0f} "
                     f"({b['estimator_rss_mib']:.0f}) | {abs(a['value'] - b['value']):.1e} | "
                     f"{grad} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="CIFAR-10 Parquet folder, or 'bundled'")
    ap.add_argument("--sizes", type=int, nargs="+", default=[4096, 10000])
    ap.add_argument("--chunk", type=int, default=512)
    ap.add_argument("--sigma", type=float, default=0.3)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--tag", default="estimator")
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench-estimator"))
    args = ap.parse_args(argv)

    import datetime

    import torch
    from safetensors.torch import load_file

    import hf_unlearnable

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    feats = work / f"features-{max(args.sizes)}.safetensors"
    if not feats.exists():
        _features(args.data, max(args.sizes), feats)
    threads = torch.get_num_threads()
    ctx = mp.get_context("spawn")
    comparisons = []
    for size in args.sizes:
        for gradient in (True, False):
            runs = {}
            for impl in ("autograd", "library"):
                job = dict(impl=impl, size=size, gradient=gradient, chunk=args.chunk, sigma=args.sigma,
                           repeat=args.repeat, threads=threads, features=str(feats),
                           grad_out=str(work / f"grad-{impl}.safetensors"))
                with ctx.Pool(1) as pool:
                    runs[impl] = pool.apply(_case, (job,))
                print(runs[impl], flush=True)
            diff = None
            if gradient:
                ga = load_file(str(work / "grad-autograd.safetensors"))["g"]
                gb = load_file(str(work / "grad-library.safetensors"))["g"]
                diff = float((ga - gb).abs().max() / ga.abs().max().clamp_min(1e-30))
            comparisons.append({"size": size, "gradient": gradient, **runs, "gradient_max_rel_diff": diff})
    result = {"date": datetime.date.today().isoformat(), "library_version": hf_unlearnable.__version__,
              "torch": torch.__version__, "threads": threads, "data": args.data, "sigma": args.sigma,
              "chunk": args.chunk, "repeat": args.repeat,
              "feature_dim": int(load_file(str(feats))["z"].shape[1]), "comparisons": comparisons}
    write_results(args.out, args.tag, result, to_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
