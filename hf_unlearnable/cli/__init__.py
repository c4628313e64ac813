"""The `hf-unlearnable` command line: protect, craft, evaluate, demo.

    hf-unlearnable protect --data bundled --method random --output protected/
    hf-unlearnable craft --data bundled --method em --mode classwise --output noise-em/
    hf-unlearnable protect --data bundled --noise noise-em/ --output protected-em/
    hf-unlearnable evaluate --protected protected-em/ --test bundled --clean bundled --mix 1.0 0.5
    hf-unlearnable train-surrogate --data my-data/ --output surrogates/mine    # for your own classes
    hf-unlearnable demo

Every bad input ends as `error: <message>` on stderr and exit status 2, never a traceback. Outputs are written to a
temporary sibling folder and renamed into place only when complete.
"""

from __future__ import annotations

import argparse
from typing import Sequence

from . import certify, craft, demo, evaluate, protect, push, train_surrogate
from ._common import (PROG, SOURCES_HELP, check_output, load_source, logging_to_stderr, parse_class_map,
                      parse_epsilon, parse_option_value, parse_options)
from ._errors import run_command

__all__ = ["main", "build_parser", "parse_epsilon", "parse_options", "parse_option_value", "parse_class_map",
           "load_source", "check_output", "SOURCES_HELP"]


def build_parser() -> argparse.ArgumentParser:
    from .._version import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Make an image dataset unlearnable before releasing it (small perturbations, L-inf <= "
                    "epsilon, after which a model trained on the data fails on clean test data), and measure it.",
        epilog=f"Data (--data SRC): {SOURCES_HELP}.\n\nOutputs of protect (--format): arrow (save_to_disk), parquet "
               "(data/<split>-00000-of-00001.parquet), imagefolder (<class>/<file stem>.png); --push REPO_ID "
               f"publishes with a card.\n\nRun `{PROG} COMMAND --help` for the options of each command.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in (protect, craft, evaluate, certify, push, train_surrogate, demo):   # certify adds recover too
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad input, 130 interrupted)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (argparse already printed it)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    verbosity = args.verbose - args.quiet
    with logging_to_stderr(verbosity):
        return run_command(args.func, args, verbose=verbosity > 0)
