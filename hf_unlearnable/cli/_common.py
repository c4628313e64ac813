"""What every command shares: argument types, data sources, output checks, logging, common flags."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterator, Sequence

from .._atomic import check_writable, file_in_the_way
from ..data import SOURCES_HELP
from ..errors import ProtectionError

PROG = "hf-unlearnable"


# -- argument parsing helpers --------------------------------------------------------------------------------------
def _fraction(text: str) -> float:
    """'8/255' or '0.8/255' -> float; raises ValueError / ZeroDivisionError."""
    num, den = str(text).strip().split("/", 1)
    return float(num) / float(den)


def parse_epsilon(text: str) -> float:
    """'8/255' or a float such as '0.0314'. Range checks are the library's (check_epsilon), not argparse's."""
    try:
        value = _fraction(text) if "/" in str(text) else float(text)
    except ZeroDivisionError:
        raise argparse.ArgumentTypeError(f"{text!r} divides by zero: write e.g. 8/255 or 0.0314") from None
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number: write e.g. 8/255 or 0.0314") from None
    return value


def parse_option_value(text: str) -> Any:
    """JSON when possible (ints, floats, true/false, null, lists), Python's True/False/None, a fraction 'a/b' as a
    float, else the string."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    if text in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[text]
    if "/" in text:
        try:
            return _fraction(text)
        except (ValueError, ZeroDivisionError):
            pass
    return text


def parse_options(items: Sequence[str] | None) -> dict[str, Any]:
    """['steps=10', 'mode=classwise'] -> {'steps': 10, 'mode': 'classwise'}."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ProtectionError(f"--option {item!r} must be key=value, e.g. --option steps=10.")
        if key in out:
            raise ProtectionError(f"--option {key} is given twice.")
        out[key] = parse_option_value(value)
    return out


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def ratio(text: str) -> float:
    try:
        return _fraction(text) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number in (0, 1]") from None


def parse_class_map(text: str) -> str | dict:
    """--class-map: 'index', or a JSON object {your class: noise class}; keys written as integers ("3") are label
    indices, other keys class names; values are noise class names or indices."""
    if text.strip() == "index":
        return "index"
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text!r} is neither 'index' nor a JSON object such as "
                                         '\'{"tabby": "cat", "3": 5}\'')
    return {int(k) if k.strip().lstrip("-").isdigit() else k: v for k, v in value.items()}


def wrap(text: str) -> str:
    """Wrap a description for RawDescriptionHelpFormatter (which keeps the examples in the epilog as written)."""
    return textwrap.fill(text, width=min(100, shutil.get_terminal_size((100, 20)).columns - 2))


# -- data sources --------------------------------------------------------------------------------------------------
def load_source(src: str, split: str, config: str | None = None, revision: str | None = None):
    """A datasets.Dataset from SRC (see SOURCES_HELP): the library's one loader, hf_unlearnable.data.load_source."""
    from ..data import load_source as load

    return load(src, split, config=config, revision=revision)


def given(**keywords: Any) -> dict[str, Any]:
    """The keywords whose flag was given (None: left to the library's default, and not passed at all)."""
    return {k: v for k, v in keywords.items() if v is not None}


# -- atomic outputs ------------------------------------------------------------------------------------------------
def check_output(output: str, overwrite: bool, *inputs: str | None) -> Path:
    target = Path(os.path.expanduser(output))
    for src in inputs:   # --overwrite must never replace (or swallow) what the command reads
        if src is None or not Path(os.path.expanduser(src)).exists():
            continue
        read, out = Path(os.path.expanduser(src)).resolve(), target.resolve()
        if out == read or out in read.parents:
            raise ProtectionError(f"--output {output!r} would replace the input {src!r}; choose another folder.")
    if target.exists() and not overwrite:
        raise ProtectionError(f"--output {output!r} already exists; pass --overwrite to replace it, or choose "
                              "another folder.")
    if target.exists() and not target.is_dir():
        raise ProtectionError(f"--output {output!r} exists and is not a folder; remove it or choose another path.")
    check_writable(target.parent if target.exists() else target, "--output")
    return target


def check_file_outputs(**paths: str | None) -> None:
    """Refuse report paths that cannot be written, before any training (not after it, losing the results)."""
    for flag, path in paths.items():
        if path is None:
            continue
        target = Path(os.path.expanduser(path))
        if target.is_dir():
            raise ProtectionError(f"--{flag} {path!r} is a folder; pass a file path.")
        blocking = file_in_the_way(target)
        if blocking is not None:
            raise ProtectionError(f"--{flag} {path!r}: {str(blocking)!r} is a file, not a folder.")
        check_writable(target.parent, f"--{flag}")


# -- logging and progress ------------------------------------------------------------------------------------------
@contextlib.contextmanager
def logging_to_stderr(verbosity: int) -> Iterator[None]:
    """Log to stderr for the duration of one main() call (leaves the caller's logging alone afterwards)."""
    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    pkg = logging.getLogger("hf_unlearnable")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    old_level, old_propagate = pkg.level, pkg.propagate
    pkg.addHandler(handler)
    pkg.setLevel(level)
    pkg.propagate = False
    bars = None
    try:
        if verbosity < 0:
            import datasets

            bars = datasets.utils.logging.is_progress_bar_enabled()
            datasets.disable_progress_bars()
        yield
    finally:
        pkg.removeHandler(handler)
        pkg.setLevel(old_level)
        pkg.propagate = old_propagate
        if bars:
            import datasets

            datasets.enable_progress_bars()


# -- flags shared by several commands -------------------------------------------------------------------------------
def add_common(p: argparse.ArgumentParser) -> None:
    """Options shared by protect and craft."""
    p.add_argument("--data", default="bundled", metavar="SRC",
                   help=f"where the images come from: {SOURCES_HELP}. Default: bundled.")
    p.add_argument("--split", default="train",
                   help="which split of SRC to use (ignored for a save_to_disk folder holding one Dataset, and for "
                        "a folder or file with one split). Default: train.")
    add_hub_source(p)
    p.add_argument("--seed", type=int, default=0, help="random seed; results are reproducible for a fixed seed. "
                                                       "Default: 0.")
    p.add_argument("--image-column", default=None,
                   help="name of the image column. Default: the one column with the datasets Image feature.")
    p.add_argument("--label-column", default=None,
                   help="name of the integer label column. Default: the ClassLabel column, or one named label / "
                        "labels / fine_label / class / target.")


def add_hub_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, metavar="NAME",
                   help="with a Hub dataset id as --data: its configuration (subset). Default: the dataset's default.")
    p.add_argument("--revision", default=None,
                   help="with a Hub dataset id as --data: a branch, tag or commit. Default: main.")


def add_verbosity(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="count", default=0, help="less output: no progress bars, warnings only.")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more output (debug logging).")


def command_line_hint(message: str) -> str:
    """The library's messages name Python arguments; on the command line the same fix is a flag."""
    names = ("image_column", "label_column", "id_column", "resolution", "class_map", "clusters", "adversarial_epsilon",
             "checkpoint_dir")
    flags = [f"--{name.replace('_', '-')}" for name in names if f"{name}=" in message]
    return f"\n(on the command line: {' / '.join(flags)})" if flags else ""
