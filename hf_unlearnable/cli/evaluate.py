"""`hf-unlearnable evaluate`: train victims on protected (and clean, mixed) data and report clean-test accuracy."""

from __future__ import annotations

import argparse

from .._atomic import write_text_atomic
from ..errors import ProtectionError
from ._common import SOURCES_HELP, add_verbosity, check_file_outputs, given, load_source, positive_int, ratio, wrap


def register(sub) -> None:
    from ..defences import DEFENCES
    from ..surrogates.nets import ARCHITECTURES

    p = sub.add_parser(
        "evaluate", help="train victims on protected data and report clean-test accuracy",
        description=wrap("Train one victim per (defence, training set) and report its accuracy on the clean test set: "
                         "the clean data (with --clean), the protected data (mix 1.0), and for each mix ratio r < 1 "
                         "both the mix (a seeded share r of rows protected) and its clean-only control (the 1 - r "
                         "clean rows alone; without it a mix result means nothing). Prints the report as Markdown."),
        epilog="examples:\n"
               "  hf-unlearnable evaluate --protected out/em-cw --test bundled --clean bundled \\\n"
               "      --mix 1.0 0.5 --defences none grayscale --epochs 15 --json report.json\n"
               "  hf-unlearnable evaluate --protected out/em-cw --clean bundled --protocol finetune --mix 0.5",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--protected", required=True, metavar="SRC",
                   help=f"the protected training data: usually a folder written by `protect`; also {SOURCES_HELP}. "
                        "Required.")
    p.add_argument("--protected-split", default="train", help="split of --protected when it has several. "
                                                              "Default: train.")
    p.add_argument("--test", default="bundled", metavar="SRC",
                   help=f"the clean test data: {SOURCES_HELP}. Default: bundled.")
    p.add_argument("--test-split", default="test", help="split of --test. Default: test.")
    p.add_argument("--clean", default=None, metavar="SRC",
                   help="the unprotected training data, row for row the source of --protected; adds a clean victim "
                        "and is needed for mix ratios below 1. Default: none.")
    p.add_argument("--clean-split", default="train", help="split of --clean. Default: train.")
    p.add_argument("--mix", type=ratio, nargs="+", default=None, metavar="R",
                   help="shares of protected rows in (0, 1]; each r < 1 trains the mix and its clean-only control "
                        "(with --protocol finetune: the share the victim fine-tunes on). Default: 1.0 (finetune: "
                        "0.5).")
    p.add_argument("--protocol", default="scratch", choices=["scratch", "finetune"],
                   help="scratch: every victim trains from scratch. finetune: for each r < 1 a victim pre-trains on "
                        "the clean 1 - r rows, then fine-tunes on the other r rows, protected and clean, reported "
                        "beside the pre-trained victim (needs --clean). Default: scratch.")
    p.add_argument("--defences", nargs="+", default=["none"], metavar="NAME",
                   help=f"defences of the victim, from {sorted(DEFENCES)}: grayscale and jpeg change its train "
                        "and test inputs; adversarial, cutout, cutmix, mixup, ueraser and ueraser-lite change how it "
                        "trains. Default: none.")
    p.add_argument("--victim", default=None, choices=sorted(ARCHITECTURES),
                   help="victim architecture. Default: resnet18 on CUDA, else the CPU-fast convnet.")
    p.add_argument("--epochs", type=positive_int, default=None, metavar="N",
                   help="victim training epochs. Default: 60 on CUDA, 30 on CPU.")
    p.add_argument("--seed", type=int, default=0, help="picks the protected rows of each mix and seeds every "
                                                       "victim. Default: 0.")
    p.add_argument("--image-column", default=None, help="image column of all three datasets. Default: detected.")
    p.add_argument("--label-column", default=None, help="label column of all three datasets. Default: detected.")
    p.add_argument("--resolution", type=positive_int, default=None, metavar="N",
                   help="train and test the victims at N x N: every image (any size) is resized to it, as a "
                        "scraper's pipeline does. Default: 32.")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the full report as JSON. Default: no.")
    p.add_argument("--markdown", default=None, metavar="FILE", help="also write the Markdown table. Default: no.")
    add_verbosity(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import evaluate
    from ..defences import get_defence

    check_file_outputs(json=args.json, markdown=args.markdown)
    for d in args.defences:
        get_defence(d)
    for r in args.mix or []:
        if not 0 < r <= 1:
            raise ProtectionError(f"--mix {r}: each ratio must be in (0, 1], the share of rows that are protected.")
    protected = load_source(args.protected, args.protected_split)
    test = load_source(args.test, args.test_split)
    clean = load_source(args.clean, args.clean_split) if args.clean is not None else None
    report = evaluate(protected, test, clean=clean, mix=args.mix, defences=args.defences, victim=args.victim,
                      epochs=args.epochs, seed=args.seed, image_column=args.image_column,
                      label_column=args.label_column, progress=args.quiet == 0, protocol=args.protocol,
                      **given(resolution=args.resolution))
    md = report.to_markdown()
    print(md)
    if args.json:
        write_text_atomic(args.json, report.to_json())
    if args.markdown:
        write_text_atomic(args.markdown, md)
    return 0
