"""`hf-unlearnable certify` and `recover` (PUE): certified learnability of protected data, and the weight-recovery
attack on a model trained on it. Both train theta-hat on the protected data first."""

from __future__ import annotations

import argparse
import json

from .._atomic import write_text_atomic
from ._common import SOURCES_HELP, add_verbosity, check_file_outputs, load_source, positive_int, wrap


def register(sub) -> None:
    _register_certify(sub)
    _register_recover(sub)


def run(args: argparse.Namespace) -> int:
    return _recover(args) if args.command == "recover" else _certify(args)


def _add_theta_hat_options(p: argparse.ArgumentParser) -> None:
    from ..surrogates.nets import ARCHITECTURES

    p.add_argument("--protected", required=True, metavar="SRC",
                   help=f"the protected training data theta-hat is trained on: {SOURCES_HELP}. Required.")
    p.add_argument("--protected-split", default="train", help="split of --protected. Default: train.")
    p.add_argument("--test", default="bundled", metavar="SRC", help=f"the clean test data: {SOURCES_HELP}. "
                                                                    "Default: bundled.")
    p.add_argument("--test-split", default="test", help="split of --test. Default: test.")
    p.add_argument("--victim", default=None, choices=sorted(ARCHITECTURES),
                   help="architecture of theta-hat. Default: resnet18 on CUDA, else the CPU-fast convnet.")
    p.add_argument("--epochs", type=positive_int, default=None, metavar="N",
                   help="epochs to train theta-hat. Default: 60 on CUDA, 30 on CPU.")
    p.add_argument("--seed", type=int, default=0, help="seeds theta-hat's training and the draws. Default: 0.")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the result as JSON. Default: no.")
    p.add_argument("--image-column", default=None, help="image column of every dataset. Default: detected.")
    p.add_argument("--label-column", default=None, help="label column of every dataset. Default: detected.")
    p.add_argument("--resolution", type=positive_int, default=32, metavar="N",
                   help="train and test at N x N: every image (any size) is resized to it. Default: 32.")
    add_verbosity(p)


def _register_certify(sub) -> None:
    p = sub.add_parser(
        "certify", help="certified (q, eta)-learnability of protected data (PUE)",
        description=wrap("Train theta-hat on the protected data (the victim trainer of `evaluate`), draw N weight "
                         "perturbations sigma*N(0, I), measure clean test accuracy for each, and print the certified "
                         "learnability per eta: an upper bound, with the given confidence, on the q-quantile of the "
                         "smoothed accuracy of every model within L2 distance eta of theta-hat (lower = stronger "
                         "protection; 'abstain' where N is too small for that eta)."),
        epilog="example:\n  hf-unlearnable certify --protected out/pue --test bundled --n 200 --etas 0 0.05 0.1",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_theta_hat_options(p)
    p.add_argument("--q", type=float, default=0.9, help="the quantile certified. Default: 0.9.")
    p.add_argument("--sigma", type=float, default=0.25, help="weight-noise standard deviation. Default: 0.25.")
    p.add_argument("--n", type=positive_int, default=1000, help="weight draws (each one full test pass). "
                                                                "Default: 1000 (the paper's); use ~100-200 on a CPU.")
    p.add_argument("--confidence", type=float, default=0.99, help="confidence of the bound. Default: 0.99.")
    p.add_argument("--etas", type=float, nargs="+", default=None, metavar="ETA",
                   help="radii of the certified weight ball. Default: 0.001 ... 2.0 (the paper's grid).")
    p.set_defaults(func=run)


def _certify(args: argparse.Namespace) -> int:
    from .. import certify

    check_file_outputs(json=args.json)
    cert = certify(load_source(args.protected, args.protected_split), load_source(args.test, args.test_split),
                   q=args.q, sigma=args.sigma, n=args.n, confidence=args.confidence, etas=args.etas,
                   seed=args.seed, victim=args.victim, epochs=args.epochs, image_column=args.image_column,
                   label_column=args.label_column, progress=args.quiet == 0, resolution=args.resolution)
    print(cert.to_markdown())
    if args.json:
        write_text_atomic(args.json, json.dumps(cert.to_dict(), indent=2))
    return 0


def _register_recover(sub) -> None:
    from ..certify import DEFAULT_RECOVERY_ETAS

    p = sub.add_parser(
        "recover", help="weight-recovery attack on a model trained on protected data (PUE)",
        description=wrap("Train theta-hat on the protected data, then for each eta fine-tune it on a small clean set "
                         "with its weights projected onto the eta-sphere around theta-hat after every step, and "
                         "print clean test accuracy against eta: how much accuracy is recoverable near theta-hat."),
        epilog="example:\n  hf-unlearnable recover --protected out/pue --clean bundled --test bundled --etas 0.5 1 2",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_theta_hat_options(p)
    p.add_argument("--clean", default="bundled", metavar="SRC",
                   help=f"the attacker's small clean set: {SOURCES_HELP}. Default: bundled.")
    p.add_argument("--clean-split", default="train", help="split of --clean. Default: train.")
    p.add_argument("--etas", type=float, nargs="+", default=list(DEFAULT_RECOVERY_ETAS), metavar="ETA",
                   help="sphere radii to sweep. Default: 0.2 ... 2.0.")
    p.add_argument("--recover-epochs", type=positive_int, default=10, help="fine-tuning epochs. Default: 10.")
    p.add_argument("--lr", type=float, default=0.01, help="fine-tuning learning rate (cosine). Default: 0.01.")
    p.set_defaults(func=run)


def _recover(args: argparse.Namespace) -> int:
    from ..certify import recover, train_theta_hat

    check_file_outputs(json=args.json)
    cols = dict(image_column=args.image_column, label_column=args.label_column, resolution=args.resolution)
    model = train_theta_hat(load_source(args.protected, args.protected_split), victim=args.victim,
                            epochs=args.epochs, seed=args.seed, progress=args.quiet == 0, **cols)
    res = recover(model, load_source(args.clean, args.clean_split), load_source(args.test, args.test_split),
                  etas=args.etas, epochs=args.recover_epochs, lr=args.lr, seed=args.seed,
                  progress=args.quiet == 0, **cols)
    print(f"theta-hat test accuracy: {100 * res['base_accuracy']:.2f} %\n\n"
          "| eta | test accuracy after recovery |\n|---|---|")
    for point in res["curve"]:
        print(f"| {point['eta']:g} | {100 * point['test_accuracy']:.2f} % |")
    if args.json:
        write_text_atomic(args.json, json.dumps(res, indent=2))
    return 0
