"""`hf-unlearnable push`: publish a protected split on the Hub with its dataset card and protection.json."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ProtectionError
from ._common import SOURCES_HELP, add_verbosity, load_source, parse_epsilon, wrap


def register(sub) -> None:
    p = sub.add_parser(
        "push", help="publish a protected dataset on the Hub with its card and protection.json",
        description=wrap("Push a protected split (what `protect` wrote) to a Hub dataset repo as one config per "
                         "method and epsilon, with a card that states what was done (method, epsilon, seed, "
                         "version, source), which columns changed and the image quality (with --original), the "
                         "measured victim accuracy (with --report, the JSON of `evaluate --json`) and the limits, "
                         "plus protection.json. Card text written by hand is never replaced unless "
                         "--overwrite-card."),
        epilog="example:\n  hf-unlearnable push --protected out/em-cw --noise noise/em-cw --original bundled "
               "--report report.json --source-dataset uoft-cs/cifar10 --repo-id me/cifar10-unlearnable",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--protected", required=True, metavar="SRC", help=f"the protected data: {SOURCES_HELP}.")
    p.add_argument("--split", default="train",
                   help="split of --protected, and the split name on the Hub. Default: train.")
    p.add_argument("--repo-id", required=True, help="target dataset repo, e.g. me/cifar10-unlearnable.")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--noise", default=None, help="the noise that was applied (folder or Hub repo id).")
    how.add_argument("--method", default=None, help="the method applied per batch (with --epsilon, --seed).")
    p.add_argument("--epsilon", type=parse_epsilon, default=None, help="with --method: its budget, e.g. 8/255.")
    p.add_argument("--seed", type=int, default=0, help="with --method: its seed. Default: 0.")
    p.add_argument("--original", default=None, metavar="SRC", help="the unprotected data, row for row (for the "
                                                                  "columns check and PSNR/SSIM). Default: none.")
    p.add_argument("--original-split", default=None, help="split of --original. Default: --split.")
    p.add_argument("--report", default=None, metavar="FILE", help="evaluate --json output. Default: none (the "
                                                                  "card then says the effect is not measured).")
    p.add_argument("--source-dataset", default=None, help="Hub id of the source dataset (license is inherited).")
    p.add_argument("--source-revision", default=None, help="revision of the source dataset.")
    p.add_argument("--license", default=None, help="license of the release (else inherited, flagged to confirm).")
    p.add_argument("--config-name", default=None, help="dataset config name. Default: <method>[-<kind>]-eps<k>.")
    p.add_argument("--revision", default=None, help="push to this branch (created if needed). Default: main.")
    p.add_argument("--private", action="store_true", help="create the repo private.")
    p.add_argument("--overwrite-card", action="store_true", help="regenerate the whole card.")
    p.add_argument("--token", default=None, help="Hub write token. Default: $HF_TOKEN or the saved login.")
    add_verbosity(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import load_noise, push_protected
    from ..evaluate import Report

    report = None
    if args.report:
        try:
            report = Report(**json.loads(Path(args.report).read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise ProtectionError(f"--report {args.report!r} is not the JSON written by `evaluate --json` "
                                  f"({type(exc).__name__}: {exc}).") from None
    if args.method and args.epsilon is None:
        raise ProtectionError("--method needs --epsilon (the budget the data was protected with, e.g. 8/255).")
    original = load_source(args.original, args.original_split or args.split) if args.original else None
    result = push_protected(
        load_source(args.protected, args.split), args.repo_id,
        noise=load_noise(args.noise) if args.noise else None, method=args.method,
        epsilon=args.epsilon if args.method else None, seed=args.seed if args.method else None,
        original=original, report=report, source_dataset=args.source_dataset,
        source_revision=args.source_revision, license=args.license, config_name=args.config_name, split=args.split,
        private=args.private, revision=args.revision, token=args.token, overwrite_card=args.overwrite_card)
    print(f"{result.repo_id} config {result.config_name} split {result.split} @ {result.revision} "
          f"(commit {result.commit_oid})")
    return 0
