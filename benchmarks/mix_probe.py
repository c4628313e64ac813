"""Mix probe (issue: bayes): does a poison that *transfers* also make a 50 % mix worse than its clean half alone?

A fast stand-in for `benchmarks/mixing.py --split val` at r = 0.5: the same 10k rows, validation rows, victim
(`evaluate`'s ConvNet, 10 epochs, crop+flip; victim seed 0 gives the same clean-only control as mixing.py) and the
same protected rows (`evaluate.mix_rows`), but only those 5,000 rows are perturbed, by attacks written here for the
probe, not by a library method. For every poison it reports how a *reader* (a ConvNet trained on 10k other clean rows,
per class 1200..2199, as benchmarks/transfer.py) classifies the protected rows (own class, the attack's target class)
and the mix victim's accuracy against the clean-only control; the mix victim's trace records, after every epoch, its
validation accuracy and how it classifies the protected rows (own class / target class), and the poisoned images are
kept in the cache (poison-<key>.safetensors) for later looks. Surrogates are victim-like ConvNets (12 epochs on a
seeded 70 % of per-class rows 2200..4999, rows the benchmark never uses).

Poisons (--method):
  targeted   PGD toward a target class per label (y+1, or with {"confused": true} each class's most-confused other
             class under the surrogates' softmax; {"random_targets": true}: a seeded random other class per row),
             averaged over --draws crop+flips, an ensemble of --k surrogates;
             {"lowres": 8} optimises an 8x8 perturbation upsampled bilinearly (low frequency); {"trajectory": [1, 3]}
             adds snapshots of a victim-like run per member after those epochs (the victim's early states)
  refresh    targeted, then {"rounds": R} - 1 times: train a fresh surrogate on (current poisons + as many disjoint
             clean rows), a simulated mix, and attack all surrogates so far from the current poisons
  uap        one class-wise universal targeted perturbation per class ({"then_samplewise": true}: refined per row)
  align      gradient matching: each batch's weight gradient (own labels) is pushed toward that of the clean images
             relabelled y+1 (Witches'-Brew-style cosine loss, an ensemble of --k surrogates)
  oppose     gradient opposition along a training run from scratch (methods.md §1.7): a fresh ConvNet trains on
             the poisons ({"mix": true}: plus as many disjoint clean rows) while each batch's poisons step so that
             their weight gradient points against their clean twins'; {"epochs": 24, "batch": 64, "cosine": false}
  bayes      the library's craft(ds, "bayes") on the protected rows alone (its defaults; --extra adds options);
             {"layers": "all"}: the kernel estimate on the features of every stage of the bundled surrogate
  ceiling-y1 / ceiling-confused   no perturbation: the protected half keeps its clean images, relabelled

    python benchmarks/mix_probe.py --method targeted --k 3 --extra '{"confused": true}'
    python benchmarks/mix_probe.py --table          # results/mix-probe.md from results/mix-probe.jsonl

Appends one JSON line per run to benchmarks/results/mix-probe.jsonl; caches data and nets in runs/mix-probe/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
RESULTS = ROOT / "benchmarks" / "results"

from mixing import load_split  # noqa: E402  (the same 10k rows and validation rows)

EPS = 8 / 255


def load(data: str, cache: Path) -> dict:
    """Benchmark rows (t), validation rows (v), surrogate rows (s: 2200..4999/class), reader rows (r: 1200..2199)."""
    from safetensors.torch import load_file, save_file

    f = cache / "data.safetensors"
    if f.exists():
        return load_file(str(f))
    from hf_unlearnable._data import load_labelled
    from hf_unlearnable.data import load_cifar10, per_class_rows
    from hf_unlearnable.training import nchw

    train, val = load_split(data, 1000, "val", 200, None)
    full = load_cifar10("train", data)
    parts = {"t": load_labelled(train), "v": load_labelled(val),
             "s": load_labelled(full.select(per_class_rows(full["label"], 2200, 5000))),
             "r": load_labelled(full.select(per_class_rows(full["label"], 1200, 2200)))}
    d = {}
    for k, p in parts.items():
        d[k + "x"], d[k + "y"] = nchw(p.images), torch.from_numpy(p.labels).long()
    save_file(d, str(f))
    return d


def train_net(cache: Path, x, y, seed: int, epochs: int = 10, tag: str | None = None, trace: list | None = None,
              watch: tuple | None = None, adversarial: float = 0.0):
    """A ConvNet trained with evaluate's victim recipe (cached under `tag`); eval mode. With `trace` and `watch` =
    (val x, val y, protected x, their labels, their target classes) it appends, after every epoch, the val accuracy
    and how the net classifies the protected rows (own label / target class)."""
    import math

    from safetensors.torch import load_file, save_file

    from hf_unlearnable.surrogates.nets import build
    from hf_unlearnable.training import TrainConfig, fit, predict

    f = cache / f"{tag}.safetensors" if tag else None
    torch.manual_seed(seed)
    net = build("convnet", 10)
    if f is not None and f.exists():
        net.load_state_dict(load_file(str(f)))
        return net.eval()
    step, per_epoch = [0], math.ceil(len(x) / TrainConfig().batch_size)

    def trace_epoch():
        step[0] += 1
        if step[0] % per_epoch == 0:
            vx, vy, px, py, pt = watch
            p = predict(net, px)
            trace.append({"epoch": step[0] // per_epoch, "val": float((predict(net, vx) == vy).float().mean()),
                          "protected_own": float((p == py).float().mean()),
                          "protected_target": float((p == pt).float().mean())})
            net.train()

    hook = trace_epoch if trace is not None and watch is not None else None
    fit(net, x, y, TrainConfig(epochs=epochs, adversarial_epsilon=adversarial), seed=seed, progress=False,
        after_step=hook)
    if f is not None:
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(f))
    return net.eval()


def surrogates(cache: Path, d: dict, k: int, epochs: int = 12, frac: float = 0.7, robust: int = 0) -> list:
    """k victim-like ConvNets on seeded 70 % draws of the surrogate rows; robust > 0: fast adversarial training at
    robust/255, whose input gradients follow features a victim cannot fit around as easily (robust features)."""
    nets, n = [], len(d["sy"])
    for i in range(k):
        rows = torch.from_numpy(np.sort(np.random.default_rng(100 + i).permutation(n)[:int(frac * n)]))
        nets.append(train_net(cache, d["sx"][rows], d["sy"][rows], 100 + i, epochs,
                              tag=f"sur-convnet-e{epochs}-f{frac}-{i}" + (f"-at{robust}" if robust else ""),
                              adversarial=robust / 255))
    return nets


def trajectory(cache: Path, d: dict, i: int, at: list[int], epochs: int = 10) -> list:
    """Snapshots of one victim-like training run (the victim's 10-epoch recipe on the surrogate rows of member i)
    after the given epochs: the victim's earlier states, which see the poisons before it has fitted them."""
    import math

    from safetensors.torch import load_file, save_file

    from hf_unlearnable.surrogates.nets import build
    from hf_unlearnable.training import TrainConfig, fit

    files = {e: cache / f"traj-e{epochs}-{i}-at{e}.safetensors" for e in at}
    if not all(f.exists() for f in files.values()):
        n = len(d["sy"])
        rows = torch.from_numpy(np.sort(np.random.default_rng(100 + i).permutation(n)[:int(0.7 * n)]))
        torch.manual_seed(300 + i)
        net = build("convnet", 10)
        per_epoch = math.ceil(len(rows) / TrainConfig().batch_size)
        step = [0]

        def snap():
            step[0] += 1
            e, rest = divmod(step[0], per_epoch)
            if rest == 0 and e in files:
                save_file({k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}, str(files[e]))

        fit(net, d["sx"][rows], d["sy"][rows], TrainConfig(epochs=epochs), seed=300 + i, progress=False,
            after_step=snap)
    nets = []
    for e in at:
        net = build("convnet", 10)
        net.load_state_dict(load_file(str(files[e])))
        nets.append(net.eval())
    return nets


def frozen(nets: list) -> list:
    for m in nets:
        m.eval()
        for p in m.parameters():
            p.requires_grad_(False)
    return nets


@torch.no_grad()
def confused_map(nets, x_u8, y) -> torch.Tensor:
    """For each class, the other class the surrogates' summed softmax favours most on its clean images."""
    probs = 0
    for m in nets:
        probs = probs + torch.cat([F.softmax(m(x_u8[s:s + 1000].float() / 255).float(), 1)
                                   for s in range(0, len(x_u8), 1000)])
    conf = torch.zeros(10, 10)
    conf.index_add_(0, y, probs)
    conf.fill_diagonal_(-1)
    return conf.argmax(1)


def craft_targeted(nets, x_u8, y, steps=20, draws=2, step=None, seed=0, batch=500, lowres=0, tmap=None, init=None,
                   eps=8, row_targets=None):
    """Signed PGD (step eps/8) toward tmap[y] (default y+1) on the summed CE of the nets, over crop+flip draws;
    eps in /255 (the library's 8 by default; larger only to see what budget a hurting poison would need)."""
    from hf_unlearnable.training import autocast, crop_flip

    eps = eps / 255
    step = step or eps / 8
    gen = torch.Generator().manual_seed(seed)
    out = torch.empty(x_u8.shape, dtype=torch.float32)
    for s in range(0, len(x_u8), batch):
        x = x_u8[s:s + batch].float() / 255
        yy = y[s:s + batch]
        t = (yy + 1) % 10 if tmap is None else tmap[yy]
        if row_targets is not None:          # a target per row: no class-consistent direction to learn
            t = row_targets[s:s + batch]
        eta = torch.zeros(len(x), 3, lowres, lowres) if lowres else torch.zeros_like(x)
        if init is not None:
            eta = init[s:s + batch].clone()

        def up(e):
            return F.interpolate(e, size=x.shape[-2:], mode="bilinear", align_corners=False) if lowres else e

        for _ in range(steps):
            g = torch.zeros_like(eta)
            for _ in range(max(1, draws)):
                ei = eta.detach().requires_grad_(True)
                xt = (x + up(ei)).clamp(0, 1)
                xt = crop_flip(xt, gen) if draws else xt
                total = 0
                for m in nets:
                    with autocast(xt.device):
                        total = total - F.cross_entropy(m(xt).float(), t, reduction="sum")
                (gi,) = torch.autograd.grad(total, ei)
                g += gi
            eta = (eta.detach() + step * g.sign()).clamp(-eps, eps)
        out[s:s + batch] = (x + up(eta)).clamp(0, 1) - x
    return out


def craft_uap(nets, x_u8, y, tmap, steps=30, draws=2, step=None, seed=0, batch=500):
    """One universal perturbation per class c, pushed toward tmap[c] over all rows of class c."""
    from hf_unlearnable.training import autocast, crop_flip

    step = step or EPS / 8
    gen = torch.Generator().manual_seed(seed)
    u = torch.zeros(10, *x_u8.shape[1:])
    for c in range(10):
        xc = x_u8[y == c]
        for _ in range(steps):
            g = torch.zeros_like(u[c])
            for s in range(0, len(xc), batch):
                x = xc[s:s + batch].float() / 255
                for _ in range(max(1, draws)):
                    ui = u[c].clone().requires_grad_(True)
                    xt = (x + ui).clamp(0, 1)
                    xt = crop_flip(xt, gen) if draws else xt
                    total = 0
                    for m in nets:
                        with autocast(xt.device):
                            total = total - F.cross_entropy(m(xt).float(), torch.full((len(x),), int(tmap[c])),
                                                            reduction="sum")
                    (gi,) = torch.autograd.grad(total, ui)
                    g += gi
            u[c] = (u[c] + step * g.sign()).clamp(-EPS, EPS)
    x = x_u8.float() / 255
    return (x + u[y]).clamp(0, 1) - x


def craft_align(nets, x_u8, y, steps=20, draws=1, step=None, seed=0, batch=250):
    """Gradient matching: minimise 1 - cos(grad_w CE(x + delta, y), grad_w CE(x, y + 1)) per batch and net."""
    from hf_unlearnable.training import autocast, crop_flip

    step = step or EPS / 8
    gen = torch.Generator().manual_seed(seed)
    out = torch.empty(x_u8.shape, dtype=torch.float32)
    for m in nets:
        m.eval()
        for p in m.parameters():
            p.requires_grad_(True)
    for s in range(0, len(x_u8), batch):
        x = x_u8[s:s + batch].float() / 255
        yy = y[s:s + batch]
        t = (yy + 1) % 10
        xa = x.clone()
        for _ in range(steps):
            g = torch.zeros_like(x)
            for _ in range(max(1, draws)):
                xi = xa.detach().requires_grad_(True)
                if draws:                       # the same crop+flip for the clean twin and the poison
                    state = gen.get_state()
                    xc = crop_flip(x, gen)
                    gen.set_state(state)
                    xt = crop_flip(xi, gen)
                else:
                    xc, xt = x, xi
                loss = 0
                for m in nets:
                    params = list(m.parameters())
                    with autocast(xt.device):
                        target = torch.autograd.grad(F.cross_entropy(m(xc).float(), t, reduction="sum"), params)
                    with autocast(xt.device):
                        poison = torch.autograd.grad(F.cross_entropy(m(xt).float(), yy, reduction="sum"), params,
                                                     create_graph=True)
                    num = sum((a * b.detach()).sum() for a, b in zip(poison, target))
                    den = (torch.sqrt(sum(a.pow(2).sum() for a in poison))
                           * torch.sqrt(sum(b.pow(2).sum() for b in target)))
                    loss = loss + 1 - num / den
                (gi,) = torch.autograd.grad(loss, xi)
                g += gi
            xa = xa.detach() - step * g.sign()
            xa = (x + (xa - x).clamp(-EPS, EPS)).clamp(0, 1)
        out[s:s + batch] = xa - x
    return out


def craft_oppose(d, xs, ys, epochs=24, batch=64, step=None, seed=0, mix=False, cosine=False):
    """Gradient opposition along a training run from scratch (methods.md §1.7, the family the BEO repo's June
    evaluation names). A fresh victim-like ConvNet trains on the current poisons (with mix=True on poisons + as many
    disjoint clean rows: a simulated mix); before each of its steps the batch's poisons take one signed step that
    points their weight gradient against that of their clean twins (same crop+flip), so a step on a poison undoes a
    step on its clean image. Every row gets one step per epoch, against the net of that moment, early ones included
    (the probe's victims fit a poison in the first epochs)."""
    import math

    from hf_unlearnable.surrogates.nets import build
    from hf_unlearnable.training import crop_flip

    step = step or EPS / 8
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(300 + seed)
    net = build("convnet", 10)
    params = list(net.parameters())
    n = len(xs)
    per_epoch = math.ceil(n / batch)
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=per_epoch * epochs, pct_start=0.2,
                                                anneal_strategy="linear", div_factor=25.0, final_div_factor=1e3)
    clean = None
    if mix:
        rows = np.sort(np.random.default_rng(7 + seed).permutation(len(d["sy"]))[:n])
        clean = (d["sx"][rows], d["sy"][rows])
    x_all = xs.float() / 255
    delta = torch.zeros_like(x_all)
    for _ in range(epochs):
        net.train()
        order = torch.randperm(n, generator=gen)
        for s in range(0, n, batch):
            idx = order[s:s + batch]
            x, y = x_all[idx], ys[idx]
            xi = (x + delta[idx]).clamp(0, 1).requires_grad_(True)
            state = gen.get_state()
            xc = crop_flip(x, gen)
            gen.set_state(state)
            xt = crop_flip(xi, gen)
            g_clean = torch.autograd.grad(F.cross_entropy(net(xc), y, reduction="sum"), params)
            g_poison = torch.autograd.grad(F.cross_entropy(net(xt), y, reduction="sum"), params, create_graph=True)
            loss = sum((a * b).sum() for a, b in zip(g_poison, g_clean))
            if cosine:
                loss = loss / (torch.sqrt(sum(a.pow(2).sum() for a in g_poison))
                               * torch.sqrt(sum(b.pow(2).sum() for b in g_clean)) + 1e-12)
            (g,) = torch.autograd.grad(loss, xi)
            dn = (delta[idx] - step * g.sign()).clamp(-EPS, EPS)
            delta[idx] = (x + dn).clamp(0, 1) - x
            # the net's own step, on the updated poisons (and a clean batch of the simulated mix)
            xb, yb = (x + delta[idx]).clamp(0, 1), y
            if clean is not None:
                cidx = torch.randint(0, n, (len(idx),), generator=gen)
                xb = torch.cat([xb, clean[0][cidx].float() / 255])
                yb = torch.cat([yb, clean[1][cidx]])
            out = net(crop_flip(xb, gen))
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(out, yb, label_smoothing=0.1).backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            sched.step()
    return delta


class _StageFeatures(torch.nn.Module):
    """The bundled ConvNet surrogate with the features of every stage of its body (each max-pooled and divided by its
    max-abs on clean rows) in place of the last stage's only: a victim learns the early stages' features first."""

    def __init__(self, sur, x_clean: torch.Tensor):
        super().__init__()
        self.net, self.num_classes, self.config = sur.model, sur.num_classes, sur.config
        with torch.no_grad():
            stages = self._stages(x_clean)
        self.register_buffer("scales", torch.stack([f.abs().max().clamp_min(1e-12) for f in stages]))

    def _stages(self, x):
        out = []
        for layer in self.net.body:
            x = layer(x)
            if isinstance(layer, torch.nn.MaxPool2d):
                out.append(F.adaptive_max_pool2d(x, 1).flatten(1))
        return out

    def features_and_logits(self, x):
        stages = self._stages(x)
        return torch.cat([f / s for f, s in zip(stages, self.scales)], 1), self.net.fc(stages[-1])

    def features(self, x):
        return self.features_and_logits(x)[0]

    def forward(self, x):
        return self.features_and_logits(x)[1]


def craft_bayes(xs, ys, layers="last", **options):
    """The library's `craft(ds, "bayes")` on the protected rows alone (its defaults unless options say otherwise);
    {"layers": "all"} gives its kernel estimate the features of every stage of the bundled surrogate."""
    from hf_unlearnable._data import LabelledImages
    from hf_unlearnable.methods.bayes import BayesConfig, BayesErrorOptimisation
    from hf_unlearnable.surrogates import load_surrogate

    method = BayesErrorOptimisation(BayesConfig.from_options("bayes", **options))
    if layers == "all":
        method._surrogate = _StageFeatures(load_surrogate(None), xs[:1000].float() / 255)
    data = LabelledImages(xs.permute(0, 2, 3, 1).numpy(), ys.numpy(), [str(i) for i in range(len(ys))])
    noise = method.craft(data)
    return torch.from_numpy(noise.steps.astype(np.float32) / 255).permute(0, 3, 1, 2)


def quantise(x_u8, delta):
    return (x_u8.float() + torch.round(delta * 255)).clamp(0, 255).to(torch.uint8)


def run(args) -> dict:
    from hf_unlearnable.evaluate import mix_rows
    from hf_unlearnable.training import accuracy, predict

    cache = Path(args.work)
    cache.mkdir(parents=True, exist_ok=True)
    d = load(args.data, cache)
    chosen = torch.from_numpy(mix_rows(len(d["ty"]), 0.5, args.victim_seed))
    t0 = time.time()
    reader = train_net(cache, d["rx"], d["ry"], 7, 10, tag="reader")
    extra = json.loads(args.extra)
    res = {"method": args.method, "k": args.k, "steps": args.steps, "draws": args.draws,
           "victim_seed": args.victim_seed, "extra": dict(extra)}
    if args.victim_epochs != 10:
        res["victim_epochs"] = args.victim_epochs
    ctrl_file = cache / (f"control-v{args.victim_seed}" + (f"-e{args.victim_epochs}" if args.victim_epochs != 10
                                                              else "") + ".json")
    if not ctrl_file.exists():
        net = train_net(cache, d["tx"][~chosen], d["ty"][~chosen], args.victim_seed, args.victim_epochs)
        ctrl_file.write_text(json.dumps({"control": accuracy(net, d["vx"], d["vy"]),
                                         "reader_val": accuracy(reader, d["vx"], d["vy"])}))
    res.update(json.loads(ctrl_file.read_text()))
    xs, ys = d["tx"][chosen], d["ty"][chosen]
    images, labels = d["tx"].clone(), d["ty"].clone()
    robust = extra.pop("robust", 0)         # adversarially trained surrogates at robust/255
    nets = frozen(surrogates(cache, d, args.k, robust=robust)) if args.k else []
    if extra.pop("with_standard", False):   # ... beside the standard ones
        nets += frozen(surrogates(cache, d, args.k))
    # the target map comes from the converged members only (early snapshots favour one or two classes for all)
    confused = extra.pop("confused", args.method in ("uap", "ceiling-confused"))
    tmap = confused_map(nets, d["tx"], d["ty"]) if confused else None
    at = extra.pop("trajectory", None)      # epochs of victim-like runs (one per member) added to the ensemble
    if at:
        nets += frozen([m for i in range(max(1, args.k)) for m in trajectory(cache, d, i, at)])
    res["surrogate_val"] = [accuracy(m, d["vx"], d["vy"]) for m in nets]
    if tmap is not None:
        res["target_map"] = tmap.tolist()
    # crafted poisons are kept per (attack, protected rows): a rerun with another victim reuses them
    from safetensors.torch import load_file, save_file

    key = hashlib.sha1(json.dumps([args.method, args.k, args.steps, args.draws, json.loads(args.extra)]
                                  + ([args.victim_seed] if args.victim_seed else []),
                                  sort_keys=True).encode()).hexdigest()[:10]
    poison_file = cache / f"poison-{key}.safetensors"
    if extra.pop("random_targets", False):       # each row toward a seeded random other class
        g = torch.Generator().manual_seed(11)
        extra["row_targets"] = (ys + torch.randint(1, 10, ys.shape, generator=g)) % 10
    t1 = time.time()
    delta = None
    if poison_file.exists():
        delta = (load_file(str(poison_file))["x"].float() - xs.float()) / 255
        res["poison_reused"] = True
    elif args.method == "targeted":
        delta = craft_targeted(nets, xs, ys, args.steps, args.draws, tmap=tmap, **extra)
    elif args.method == "refresh":
        rounds = extra.pop("rounds", 3)
        delta, res["rounds"] = torch.zeros(xs.shape), []
        rng = np.random.default_rng(5)
        for r in range(rounds):
            delta = craft_targeted(nets, xs, ys, args.steps, args.draws, tmap=tmap, init=delta, **extra)
            if r == rounds - 1:
                break
            xq = quantise(xs, delta)
            clean = torch.from_numpy(np.sort(rng.permutation(len(d["sy"]))[:len(xs)]))
            fresh = frozen([train_net(cache, torch.cat([xq, d["sx"][clean]]), torch.cat([ys, d["sy"][clean]]),
                                      200 + r, 12)])[0]
            res["rounds"].append({"fresh_fits_poisons": float((predict(fresh, xq) == ys).float().mean()),
                                  "fresh_val": accuracy(fresh, d["vx"], d["vy"])})
            nets = nets + [fresh]
    elif args.method == "uap":
        delta = craft_uap(nets, xs, ys, tmap, args.steps, args.draws)
        if extra.pop("then_samplewise", False):
            delta = craft_targeted(nets, xs, ys, args.steps, args.draws, tmap=tmap, init=delta, **extra)
    elif args.method == "align":
        delta = craft_align(nets, xs, ys, args.steps, args.draws, **extra)
    elif args.method == "oppose":
        delta = craft_oppose(d, xs, ys, **extra)
    elif args.method == "bayes":
        delta = craft_bayes(xs, ys, **extra)
    elif args.method == "ceiling-y1":
        labels[chosen] = (labels[chosen] + 1) % 10
    elif args.method == "ceiling-confused":
        labels[chosen] = tmap[labels[chosen]]
    res["craft_seconds"] = round(time.time() - t1, 1)
    if delta is not None:
        xq = quantise(xs, delta)
        budget = json.loads(args.extra).get("eps", 8)
        if int((xq.int() - xs.int()).abs().max()) > budget:
            raise SystemExit(f"a perturbation left the {budget}/255 box")
        images[chosen] = xq
        p = predict(reader, xq)
        res["reader_own_class"] = float((p == ys).float().mean())
        res["reader_y_plus_1"] = float((p == (ys + 1) % 10).float().mean())
        if extra.get("row_targets") is not None:
            res["reader_target"] = float((p == extra["row_targets"]).float().mean())
        elif tmap is not None:
            res["reader_target"] = float((p == tmap[ys]).float().mean())
    if delta is not None:
        save_file({"x": xq}, str(poison_file))
        res["poison_file"] = poison_file.name
    net = train_net(cache, images, labels, args.victim_seed, args.victim_epochs, trace=res.setdefault("trace", []),
                    watch=(d["vx"], d["vy"], images[chosen], labels[chosen],
                           extra["row_targets"] if extra.get("row_targets") is not None
                           else tmap[labels[chosen]] if tmap is not None else (labels[chosen] + 1) % 10))
    res["mix"] = accuracy(net, d["vx"], d["vy"])
    res["mix_minus_control"] = res["mix"] - res["control"]
    res["seconds"] = round(time.time() - t0, 1)
    res["date"] = time.strftime("%Y-%m-%d")
    return res


def to_markdown(rows: list[dict]) -> str:
    pct = lambda v: "–" if v is None else f"{100 * v:.1f} %"  # noqa: E731
    lines = ["# Mix probe (benchmarks/mix_probe.py)", "",
             "r = 0.5 of the mixing benchmark's validation protocol (10k rows, 10-epoch ConvNet victims, crop+flip); "
             "only the 5,000 protected rows are perturbed, by the probe's own attacks. Reader: a ConvNet on 10k other "
             "clean rows.", "",
             "| poison | surrogates | reader: own class | reader: target class | mix victim: own class at epoch 3 "
             "/ last | mix | control | mix − control |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        target = r.get("reader_target", r.get("reader_y_plus_1"))
        name = r["method"] + (f" `{json.dumps(r['extra'])}`" if r["extra"] else "") + (
            f", victim {r['victim_epochs']} epochs" if r.get("victim_epochs") else "")
        trace = {t["epoch"]: t["protected_own"] for t in r.get("trace") or []}
        last = max(trace, default=None)
        fits = f"{pct(trace[3])} / {pct(trace[last])}" if 3 in trace else "–"
        lines.append(f"| {name} | {r['k']} | {pct(r.get('reader_own_class'))} | {pct(target)} | {fits} | "
                     f"{pct(r['mix'])} | {pct(r['control'])} | {100 * r['mix_minus_control']:+.2f} pts |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "cifar10"))
    ap.add_argument("--method", default="targeted",
                    choices=["targeted", "refresh", "uap", "align", "oppose", "bayes", "ceiling-y1", "ceiling-confused"])
    ap.add_argument("--k", type=int, default=1, help="surrogates in the ensemble")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--draws", type=int, default=2, help="crop+flip draws per step (0 = none)")
    ap.add_argument("--victim-seed", type=int, default=0)
    ap.add_argument("--victim-epochs", type=int, default=10, help="epochs of the mix victim and its control")
    ap.add_argument("--extra", default="{}", help="JSON options of the poison (see above)")
    ap.add_argument("--work", default=str(ROOT / "runs" / "mix-probe"))
    ap.add_argument("--table", action="store_true", help="only rewrite results/mix-probe.md from the JSONL")
    args = ap.parse_args(argv)
    log = RESULTS / "mix-probe.jsonl"
    if not args.table:
        res = run(args)
        print(json.dumps(res), flush=True)
        with open(log, "a") as fh:
            fh.write(json.dumps(res) + "\n")
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    (RESULTS / "mix-probe.md").write_text(to_markdown(rows))
    print(to_markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
