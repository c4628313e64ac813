"""`hf-unlearnable train-surrogate`: a surrogate for your own classes (train_surrogate), saved and/or pushed."""

from __future__ import annotations

import argparse
import logging

from .._atomic import atomic_dir
from ..errors import ProtectionError
from ._common import SOURCES_HELP, add_hub_source, add_verbosity, check_output, load_source, parse_epsilon, positive_int, wrap

logger = logging.getLogger("hf_unlearnable.cli")


def register(sub) -> None:
    from ..surrogates.nets import ARCHITECTURES
    from ..surrogates.train import DEFAULT_RESOLUTION

    p = sub.add_parser(
        "train-surrogate", help="train a surrogate for your dataset's own classes, save it and/or push it",
        description=wrap("Train a surrogate classifier on a labelled dataset with any number of classes (the bundled "
                         "surrogate knows CIFAR-10's 10), at one working resolution (images of other sizes are "
                         "resized), and save it as config.json + model.safetensors + a card (README.md). Per-batch "
                         "methods then protect data with those classes: `protect --method em --option "
                         "surrogate=DIR`. The output is written to a temporary sibling folder and renamed into place "
                         "only when complete."),
        epilog="examples:\n"
               "  hf-unlearnable train-surrogate --data my-pets/ --test my-pets/ --epochs 12 --output surrogates/pets\n"
               "  hf-unlearnable protect --data my-pets/ --method em --option surrogate=surrogates/pets "
               "--output out/pets\n"
               "  hf-unlearnable train-surrogate --data my-pets/ --output surrogates/pets --push me/pets-surrogate",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="bundled", metavar="SRC",
                   help=f"the labelled training data: {SOURCES_HELP}. Default: bundled.")
    p.add_argument("--split", default="train", help="split of --data. Default: train.")
    add_hub_source(p)
    p.add_argument("--test", default=None, metavar="SRC",
                   help="clean test data with the same classes; its accuracy is recorded in the config and the "
                        "card. Default: none (not measured).")
    p.add_argument("--test-split", default="test", help="split of --test. Default: test.")
    p.add_argument("--arch", default="convnet", choices=sorted(ARCHITECTURES),
                   help="architecture: convnet (CPU-fast) or resnet18. Default: convnet.")
    p.add_argument("--width", type=positive_int, default=None, metavar="N",
                   help="base width of the network. Default: the architecture's (16 for convnet, 64 for resnet18).")
    p.add_argument("--epochs", type=positive_int, default=12, metavar="N", help="training epochs. Default: 12.")
    p.add_argument("--resolution", type=positive_int, default=None, metavar="N",
                   help=f"working size in pixels (N x N): every image is resized to it for training, and noise "
                        f"crafted against the surrogate is made at it. Default: {DEFAULT_RESOLUTION}.")
    p.add_argument("--seed", type=int, default=0, help="seeds the initial weights and the training. Default: 0.")
    p.add_argument("--adversarial-epsilon", type=parse_epsilon, default=0.0, metavar="EPS",
                   help="train on L-inf adversarial examples of this radius (e.g. 2/255) for a slightly robust "
                        "surrogate. Default: 0 (standard training).")
    p.add_argument("--image-column", default=None,
                   help="name of the image column. Default: the one column with the datasets Image feature.")
    p.add_argument("--label-column", default=None,
                   help="name of the integer label column. Default: the ClassLabel column, or one named label / "
                        "labels / fine_label / class / target.")
    p.add_argument("--output", default=None, metavar="DIR",
                   help="folder to write (config.json + model.safetensors + README.md). Required unless --push.")
    p.add_argument("--overwrite", action="store_true", help="replace --output if it exists. Default: refuse.")
    p.add_argument("--push", default=None, metavar="REPO_ID",
                   help="also push the surrogate and its card to this Hub model repo, e.g. me/pets-surrogate. "
                        "Default: no.")
    p.add_argument("--private", action="store_true", help="with --push: create the repo private.")
    p.add_argument("--token", default=None, help="with --push: Hub write token. Default: $HF_TOKEN or the saved "
                                                 "login.")
    add_verbosity(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for line in train_surrogate_command(args):
        print(line)
    return 0


def train_surrogate_command(args: argparse.Namespace) -> list[str]:
    """Train, save and/or push; returns what the command shows on stdout (the folder written, the commit URL)."""
    from ..surrogates.train import train_surrogate

    if args.output is None and args.push is None:
        raise ProtectionError("train-surrogate needs --output DIR (a folder to write) or --push REPO_ID, or both.")
    if args.push is None and (args.private or args.token):
        raise ProtectionError("--private and --token apply to --push; add --push REPO_ID or drop them.")
    target = check_output(args.output, args.overwrite, args.data, args.test) if args.output is not None else None
    train = load_source(args.data, args.split, args.config, args.revision)
    test = load_source(args.test, args.test_split) if args.test is not None else None
    logger.info("training a %s surrogate on %d rows of %s [%s]", args.arch, len(train), args.data, args.split)
    sur = train_surrogate(train, arch=args.arch, width=args.width, epochs=args.epochs, resolution=args.resolution,
                          seed=args.seed, test=test, image_column=args.image_column, label_column=args.label_column,
                          adversarial_epsilon=args.adversarial_epsilon, progress=args.quiet == 0)
    t = sur.config.training
    acc = t.get("test_accuracy")
    logger.info("surrogate: %d classes, %s, %s in %.1f s", sur.num_classes,
                "x".join(str(v) for v in sur.config.image_size),
                f"clean test accuracy {100 * acc:.2f} %" if acc is not None else "test accuracy not measured",
                t["seconds"])
    shown = []
    if target is not None:
        with atomic_dir(target) as tmp:
            sur.save_pretrained(tmp)
            (tmp / "README.md").write_text(sur.card(args.push or "<user>/<repo>"))
        shown.append(str(target))
    if args.push is not None:
        commit = sur.push_to_hub(args.push, private=True if args.private else None, token=args.token)
        shown.append(str(getattr(commit, "commit_url", None) or args.push))
    return shown
