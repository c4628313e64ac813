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
import contextlib
import json
import logging
import os
import shutil
import sys
import textwrap
import time
import traceback
from pathlib import Path
from typing import Any, Iterator, Sequence

from ._atomic import atomic_dir, check_writable, file_in_the_way, scratch_dir, write_text_atomic
from ._cli_errors import describe_failure, interrupts
from .errors import ProtectionError

logger = logging.getLogger("hf_unlearnable.cli")

PROG = "hf-unlearnable"
SOURCES_HELP = ('"bundled" (the 2,000 train / 932 test CIFAR-10 slice shipped in the package, offline), "hub" (the '
                "Hub's cifar10, needs internet), a folder holding train.parquet / test.parquet, or a folder written "
                "by Dataset.save_to_disk / DatasetDict.save_to_disk")


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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _ratio(text: str) -> float:
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


def _wrap(text: str) -> str:
    """Wrap a description for RawDescriptionHelpFormatter (which keeps the examples in the epilog as written)."""
    return textwrap.fill(text, width=min(100, shutil.get_terminal_size((100, 20)).columns - 2))


# -- data sources --------------------------------------------------------------------------------------------------
def load_source(src: str, split: str):
    """A datasets.Dataset from SRC (see SOURCES_HELP); every failure is a ProtectionError naming the fix."""
    import datasets

    from .data import load_cifar10

    if src == "bundled":
        return load_cifar10(split, src)
    if src == "hub":
        try:
            return load_cifar10(split, src)
        except ProtectionError:
            raise
        except Exception as exc:  # no network, no such split, Hub errors: all mean "use another source"
            raise ProtectionError(f"cannot load the Hub's cifar10 [{split}] ({type(exc).__name__}: {exc}); without "
                                  "internet use --data bundled or a local folder.") from None
    path = Path(os.path.expanduser(src))
    if not path.exists():
        raise ProtectionError(f"data source {src!r} does not exist; pass {SOURCES_HELP}.")
    if not path.is_dir():
        raise ProtectionError(f"data source {src!r} is a file; pass a folder: {SOURCES_HELP}.")
    if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as exc:  # datasets raises several types for a damaged folder
            raise ProtectionError(f"cannot read {src!r} with datasets.load_from_disk ({type(exc).__name__}: {exc}).") \
                from None
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise ProtectionError(f"{src!r} is a DatasetDict without a {split!r} split; its splits are "
                                      f"{sorted(ds)}.")
            ds = ds[split]
        return ds
    if (path / f"{split}.parquet").exists():
        try:
            return load_cifar10(split, str(path))
        except ProtectionError:
            raise
        except Exception as exc:  # pyarrow / datasets raise several types for a damaged Parquet file
            raise ProtectionError(f"cannot read {str(path / f'{split}.parquet')!r} ({type(exc).__name__}: {exc}); "
                                  "the file is damaged or not Parquet.") from None
    raise ProtectionError(f"{src!r} is neither a save_to_disk folder nor a folder with {split}.parquet; pass "
                          f"{SOURCES_HELP}.")


def _given(**keywords: Any) -> dict[str, Any]:
    """The keywords whose flag was given (None: left to the library's default, and not passed at all)."""
    return {k: v for k, v in keywords.items() if v is not None}


# -- atomic outputs ------------------------------------------------------------------------------------------------
def check_output(output: str, overwrite: bool, *inputs: str | None) -> Path:
    target = Path(os.path.expanduser(output))
    blocking = file_in_the_way(target)
    if blocking is not None:
        raise ProtectionError(f"--output {output!r}: {str(blocking)!r} is a file, not a folder; choose another path.")
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
def _logging(verbosity: int) -> Iterator[None]:
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


# -- protect ---------------------------------------------------------------------------------------------------------
def _add_common(p: argparse.ArgumentParser) -> None:
    """Options shared by protect and craft."""
    p.add_argument("--data", default="bundled", metavar="SRC",
                   help=f"where the images come from: {SOURCES_HELP}. Default: bundled.")
    p.add_argument("--split", default="train",
                   help="which split of SRC to use (ignored for a save_to_disk folder holding one Dataset). "
                        "Default: train.")
    p.add_argument("--seed", type=int, default=0, help="random seed; results are reproducible for a fixed seed. "
                                                       "Default: 0.")
    p.add_argument("--image-column", default=None,
                   help="name of the image column. Default: the one column with the datasets Image feature.")
    p.add_argument("--label-column", default=None,
                   help="name of the integer label column. Default: the ClassLabel column, or one named label / "
                        "labels / fine_label / class / target.")


def _add_verbosity(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="count", default=0, help="less output: no progress bars, warnings only.")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more output (debug logging).")


def _add_protect(sub) -> None:
    from .methods import METHODS

    p = sub.add_parser(
        "protect", help="protect a dataset per batch with a method or a crafted noise, and save it",
        description=_wrap("Load a dataset, map protect(...) over it (batched, with row indices, so errors name "
                          "rows), and save the result with Dataset.save_to_disk. The output is written to a temporary sibling folder "
                    "and renamed into place only when complete. Images come back as fresh PNGs within epsilon of "
                    "the originals after uint8 rounding; every other column, the row order and the row count are "
                    "kept."),
        epilog="examples:\n"
               "  hf-unlearnable protect --method random --output out/random\n"
               "  hf-unlearnable protect --method em --option steps=10 --output out/em\n"
               "  hf-unlearnable craft --method em --mode classwise --output noise/em-cw\n"
               "  hf-unlearnable protect --noise noise/em-cw --output out/em-cw",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(p)
    how = p.add_mutually_exclusive_group()
    how.add_argument("--method", default=None, metavar="NAME",
                     help=f"protection method applied per batch, one of {sorted(METHODS)}. 'em' is error-minimising "
                          "PGD against the fixed, bundled pretrained surrogate (the paper's full min-min is "
                          "`craft`). Default: em (when --noise is not given).")
    how.add_argument("--noise", default=None, metavar="DIR",
                     help="apply a crafted noise instead (a folder with config.json + noise.safetensors, as written "
                          "by `hf-unlearnable craft`); class-wise noise is applied by label, sample-wise noise by "
                          "row id.")
    p.add_argument("--epsilon", type=parse_epsilon, default=None,
                   help="L-inf budget in [0, 1] pixel units: 8/255 or a float such as 0.0314 (8 alone is refused: "
                        "did you mean 8/255?). Default: 8/255; with --noise, the noise's own budget.")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a method option, repeatable, e.g. --option steps=10 --option random_start=true; values are "
                        "read as JSON when possible (ints, floats, true/false, null), a/b as a fraction, else as a "
                        "string. Default: the method's (paper) defaults.")
    p.add_argument("--id-column", default=None,
                   help="column of stable row ids that keys sample-wise noise. Default: 'id' if present, else a "
                        "hash of the original pixels.")
    p.add_argument("--resolution", type=_positive_int, default=None, metavar="N",
                   help="working size (N x N) of methods that run a network; their noise is resized to each image's "
                        "own size, which the output keeps. Default: the surrogate's (32 for the bundled one).")
    p.add_argument("--class-map", type=parse_class_map, default=None, metavar="MAP",
                   help="with --noise (class-wise): apply it to a dataset with other classes. 'index' (your class k "
                        "gets pattern k) or a JSON object {your class: noise class}, names or indices, e.g. "
                        "'{\"tabby\": \"cat\", \"3\": 5}'. Default: the dataset's classes must be the noise's.")
    p.add_argument("--output", required=True, metavar="DIR", help="folder to write (Dataset.save_to_disk). Required.")
    p.add_argument("--overwrite", action="store_true", help="replace --output if it exists. Default: refuse.")
    p.add_argument("--num-proc", type=_positive_int, default=None, metavar="N",
                   help="processes for Dataset.map and save_to_disk; output bytes do not depend on it. Default: 1.")
    p.add_argument("--batch-size", type=_positive_int, default=256, metavar="N",
                   help="rows per map batch. Default: 256.")
    _add_verbosity(p)
    p.set_defaults(func=cmd_protect)


def _check_num_proc(method: str, num_proc: int | None) -> None:
    """Several processes split the rows into other batches: refused where the batch shapes the bytes."""
    from .methods import METHODS

    cls = METHODS.get(method)
    if num_proc is not None and num_proc > 1 and cls is not None and cls.batch_coupled:
        raise ProtectionError(f"--num-proc {num_proc}: {method}'s per-batch noise depends on which rows share a batch, "
                              "and several processes batch the rows differently, so the bytes would depend on "
                              f"--num-proc. Run with --num-proc 1, or craft it over the whole set (`craft --method "
                              f"{method}`, which splits across processes itself) and apply that with --noise DIR "
                              "--num-proc N.")


def cmd_protect(args: argparse.Namespace) -> int:
    from . import load_noise, protect
    from ._images import check_epsilon

    if args.epsilon is not None:
        check_epsilon(args.epsilon)
    options = parse_options(args.option)
    cols = dict(image_column=args.image_column, label_column=args.label_column, id_column=args.id_column)
    cols.update(_given(resolution=args.resolution, class_map=args.class_map))
    if args.noise is not None:
        transform = protect(noise=load_noise(args.noise), epsilon=args.epsilon, seed=args.seed, **cols, **options)
    else:
        _check_num_proc(args.method or "em", args.num_proc)
        transform = protect(args.method or "em", epsilon=args.epsilon, seed=args.seed, **cols, **options)
    target = check_output(args.output, args.overwrite, args.data, args.noise)   # after the options: say what's wrong
    ds = load_source(args.data, args.split)
    logger.info("protecting %d rows of %s [%s] with %r", len(ds), args.data, args.split, transform)
    with atomic_dir(target) as tmp:
        # map's own cache goes to a scratch folder beside the output (not into the source folder or the HF cache,
        # which may be read-only or shared) and is deleted once the dataset is saved.
        scratch = scratch_dir(tmp.parent, f".{target.name}.map-")
        try:
            t0 = time.perf_counter()
            out = ds.map(transform, batched=True, with_indices=True, batch_size=args.batch_size,
                         num_proc=args.num_proc, cache_file_name=str(scratch / "protected.arrow"),
                         load_from_cache_file=False, desc="Protecting")
            seconds = time.perf_counter() - t0
            out.save_to_disk(str(tmp), num_proc=args.num_proc)
            n_rows = len(out)
            del out
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    logger.info("wrote %d protected rows to %s (%.1f s protecting, %.0f images/s)", n_rows, target, seconds,
                n_rows / max(seconds, 1e-9))
    print(target)
    return 0


# -- craft -----------------------------------------------------------------------------------------------------------
def _add_craft(sub) -> None:
    from .methods import METHODS

    p = sub.add_parser(
        "craft", help="craft noise over a whole dataset (e.g. EM's min-min) and save it",
        description=_wrap("Run a method's full dataset-level algorithm (for em: the paper's bi-level min-min, a fresh "
                    "surrogate and the noise optimised in alternation) and save the Noise as config.json + "
                    "noise.safetensors. Apply it with `hf-unlearnable protect --noise DIR`."),
        epilog="examples:\n"
               "  hf-unlearnable craft --method em --mode classwise --output noise/em-cw\n"
               "  hf-unlearnable craft --method em --mode samplewise --option max_iters=10 \\\n"
               "      --checkpoint-dir ckpt/em-sw --output noise/em-sw\n"
               "  # bayes splits each pass across processes (one per GPU); the bytes do not depend on how many\n"
               "  accelerate launch --multi_gpu --num_processes 4 -m hf_unlearnable craft --method bayes \\\n"
               "      --output noise/bayes",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(p)
    p.add_argument("--method", default="em", metavar="NAME",
                   help=f"method to craft, one of {sorted(METHODS)}. Default: em.")
    p.add_argument("--mode", choices=("classwise", "samplewise"), default=None,
                   help="for methods with modes (em): one noise per class (classwise: fast, ~a minute on 2,000 "
                        "CPU images) or one per image (samplewise: ~20x the compute). Default: classwise.")
    p.add_argument("--epsilon", type=parse_epsilon, default=8 / 255,
                   help="L-inf budget in [0, 1] pixel units: 8/255 or a float. Default: 8/255.")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a method option, repeatable, e.g. --option max_iters=10 --option steps=10; values are read "
                        "as JSON when possible, a/b as a fraction, else as a string. Default: the paper's values.")
    p.add_argument("--id-column", default=None,
                   help="column of stable row ids (sample-wise noise). Default: 'id' if present, else a hash of "
                        "the original pixels.")
    p.add_argument("--checkpoint-dir", default=None, metavar="DIR",
                   help="save the crafting state after every round and resume from it after an interruption. "
                        "Default: no checkpoints.")
    p.add_argument("--resolution", type=_positive_int, default=None, metavar="N",
                   help="working size (N x N) the noise is crafted at, recorded in it (images of any size are "
                        "resized for crafting; protect brings the noise to each image's own size). Default: the "
                        "method's surrogate's input size, 32 for the bundled one.")
    p.add_argument("--clusters", type=int, default=None, metavar="K",
                   help="data without a label column: craft against K pseudo-classes, k-means clusters of the "
                        "bundled surrogate's features (class-wise noise then carries the centroids and needs no "
                        "labels when applied). Default: 10 for such data.")
    p.add_argument("--output", required=True, metavar="DIR",
                   help="folder for the noise (config.json + noise.safetensors). Required.")
    p.add_argument("--overwrite", action="store_true", help="replace --output if it exists. Default: refuse.")
    _add_verbosity(p)
    p.set_defaults(func=cmd_craft)


def cmd_craft(args: argparse.Namespace) -> int:
    from . import craft
    from ._images import check_epsilon
    from .methods import get_method

    check_epsilon(args.epsilon)
    options = parse_options(args.option)
    cls = get_method(args.method)
    if "mode" in cls.config_class.__dataclass_fields__:
        if "mode" in options and args.mode is not None:
            raise ProtectionError("give the mode once: --mode or --option mode=..., not both.")
        options.setdefault("mode", args.mode or "classwise")
    elif args.mode is not None:
        raise ProtectionError(f"method {args.method!r} has no modes; drop --mode.")
    cls.config_class.from_options(args.method, epsilon=args.epsilon, seed=args.seed, **options)  # fail fast
    target = check_output(args.output, args.overwrite, args.data)
    ds = load_source(args.data, args.split)
    logger.info("crafting %s noise over %d rows of %s [%s] (options %s)", args.method, len(ds), args.data,
                args.split, options)
    t0 = time.perf_counter()
    noise = craft(ds, args.method, epsilon=args.epsilon, seed=args.seed, checkpoint_dir=args.checkpoint_dir,
                  image_column=args.image_column, label_column=args.label_column, id_column=args.id_column,
                  **_given(resolution=args.resolution, clusters=args.clusters), **options)
    seconds = time.perf_counter() - t0
    from ._distributed import process_group

    group = process_group()
    try:
        if group.is_main:    # launched as several processes: each holds the same noise; one saves it
            with atomic_dir(target) as tmp:
                noise.save_pretrained(tmp)
            logger.info("%r crafted in %.1f s, saved to %s", noise, seconds, target)
            print(target)
    finally:
        group.close()
    return 0


# -- evaluate --------------------------------------------------------------------------------------------------------
def _add_evaluate(sub) -> None:
    from .defences import DEFENCES
    from .surrogates.nets import ARCHITECTURES

    p = sub.add_parser(
        "evaluate", help="train victims on protected data and report clean-test accuracy",
        description=_wrap("Train one victim per (defence, training set) and report its accuracy on the clean test set: "
                    "the clean data (with --clean), the protected data (mix 1.0), and for each mix ratio r < 1 "
                    "both the mix (a seeded share r of rows protected) and its clean-only control (the 1 - r clean "
                    "rows alone; without it a mix result means nothing). Prints the report as Markdown."),
        epilog="example:\n"
               "  hf-unlearnable evaluate --protected out/em-cw --test bundled --clean bundled \\\n"
               "      --mix 1.0 0.5 --defences none grayscale --epochs 15 --json report.json",
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
    p.add_argument("--mix", type=_ratio, nargs="+", default=[1.0], metavar="R",
                   help="shares of protected rows in (0, 1]; each r < 1 trains the mix and its clean-only control. "
                        "Default: 1.0.")
    p.add_argument("--defences", nargs="+", default=["none"], metavar="NAME",
                   help=f"defences applied to the victim's train and test inputs, from {sorted(DEFENCES)}. "
                        "Default: none.")
    p.add_argument("--victim", default=None, choices=sorted(ARCHITECTURES),
                   help="victim architecture. Default: resnet18 on CUDA, else the CPU-fast convnet.")
    p.add_argument("--epochs", type=_positive_int, default=None, metavar="N",
                   help="victim training epochs. Default: 60 on CUDA, 30 on CPU.")
    p.add_argument("--seed", type=int, default=0, help="picks the protected rows of each mix and seeds every "
                                                       "victim. Default: 0.")
    p.add_argument("--image-column", default=None, help="image column of all three datasets. Default: detected.")
    p.add_argument("--label-column", default=None, help="label column of all three datasets. Default: detected.")
    p.add_argument("--resolution", type=_positive_int, default=None, metavar="N",
                   help="train and test the victims at N x N: every image (any size) is resized to it, as a "
                        "scraper's pipeline does. Default: 32.")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the full report as JSON. Default: no.")
    p.add_argument("--markdown", default=None, metavar="FILE", help="also write the Markdown table. Default: no.")
    _add_verbosity(p)
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from . import evaluate
    from .defences import get_defence

    check_file_outputs(json=args.json, markdown=args.markdown)
    for d in args.defences:
        get_defence(d)
    for r in args.mix:
        if not 0 < r <= 1:
            raise ProtectionError(f"--mix {r}: each ratio must be in (0, 1], the share of rows that are protected.")
    protected = load_source(args.protected, args.protected_split)
    test = load_source(args.test, args.test_split)
    clean = load_source(args.clean, args.clean_split) if args.clean is not None else None
    report = evaluate(protected, test, clean=clean, mix=args.mix, defences=args.defences, victim=args.victim,
                      epochs=args.epochs, seed=args.seed, image_column=args.image_column,
                      label_column=args.label_column, progress=args.quiet == 0, **_given(resolution=args.resolution))
    md = report.to_markdown()
    print(md)
    if args.json:
        write_text_atomic(args.json, report.to_json())
    if args.markdown:
        write_text_atomic(args.markdown, md)
    return 0


# -- demo ------------------------------------------------------------------------------------------------------------
# The demo's EM options, chosen to fit a 2-core CPU (measured on the bundled 2,000 images; see README):
# - class-wise: surrogate batch 64 and 20 rounds (paper: 512, at least 10). The class noise itself gets about 20
#   updates per round on any data size (EMConfig.noise_batch_size's class-wise default); before that default, batch
#   512 gave a 400-row subset ONE update per round and the noise did nothing (victim 54.8 % vs 55.7 % clean).
# - sample-wise: 5 PGD steps of 1.6/255 (the same 8/255 reach as the paper's 20 x 0.8/255) at a quarter of the cost,
#   for the paper's 10 rounds.
DEMO_CLASSWISE = {"mode": "classwise", "batch_size": 64, "min_iters": 20, "max_iters": 20}
DEMO_SAMPLEWISE = {"mode": "samplewise", "steps": 5, "step_size": 1.6 / 255, "min_iters": 10, "max_iters": 10}
# bayes runs craft's defaults (20 passes with augmentation draws, clean anchors and the targeted term)
DEMO_BAYES: dict = {}


def _add_demo(sub) -> None:
    p = sub.add_parser(
        "demo", help="protect the bundled CIFAR-10 slice four ways, train a victim on each, print one table",
        description="End to end on CPU in a few minutes: protect the training data with random noise (per batch), "
                    "class-wise EM, sample-wise EM (both crafted with the min-min) and bayes (Bayes-error "
                    "optimisation over the whole set), each crafted noise applied with protect(noise=...); train "
                    "the same victim on each and on the clean data, and print one table (method, how applied, "
                    "seconds, images/s, victim test accuracy). The table is also written as demo.json and demo.md "
                    "into --output-dir.")
    p.add_argument("--data", default="bundled", metavar="SRC",
                   help=f"source of the train and test splits: {SOURCES_HELP}. Default: bundled.")
    p.add_argument("--max-train", type=_positive_int, default=2000, metavar="N",
                   help="use at most the first N training rows. Default: 2000 (all of the bundled slice).")
    p.add_argument("--max-test", type=_positive_int, default=2000, metavar="N",
                   help="use at most the first N test rows. Default: 2000 (the bundled slice has 932).")
    p.add_argument("--epochs", type=_positive_int, default=15, metavar="N", help="victim epochs. Default: 15.")
    p.add_argument("--epsilon", type=parse_epsilon, default=8 / 255, help="L-inf budget. Default: 8/255.")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise and of every victim. Default: 0.")
    p.add_argument("--classwise-option", action="append", default=[], metavar="KEY=VALUE",
                   help="override a class-wise EM crafting option, repeatable. The demo's: "
                        f"{_options_text(DEMO_CLASSWISE)} (paper: batch_size=512, at least 10 rounds).")
    p.add_argument("--samplewise-option", action="append", default=[], metavar="KEY=VALUE",
                   help="override a sample-wise EM crafting option, repeatable. The demo's: "
                        f"{_options_text(DEMO_SAMPLEWISE)} (paper: steps=20, step_size=0.8/255, at least 10 "
                        "rounds).")
    p.add_argument("--bayes-option", action="append", default=[], metavar="KEY=VALUE",
                   help="override a bayes crafting option, repeatable (e.g. passes=10). The demo's: craft's "
                        "defaults.")
    p.add_argument("--output-dir", default="runs/demo", metavar="DIR",
                   help="where demo.json and demo.md go. Default: runs/demo.")
    _add_verbosity(p)
    p.set_defaults(func=cmd_demo)


def _timed_map(ds, transform):
    t0 = time.perf_counter()
    out = ds.map(transform, batched=True, with_indices=True, batch_size=256, keep_in_memory=True,
                 load_from_cache_file=False, desc="Protecting")
    return out, time.perf_counter() - t0


def _options_text(options: dict) -> str:
    """{'steps': 5, 'step_size': 0.00627} -> 'steps=5, step_size=1.6/255' (mode left out)."""
    parts = []
    for k, v in options.items():
        if k == "mode":
            continue
        if isinstance(v, float) and 0 < v < 1 and abs(v * 255 * 10 - round(v * 255 * 10)) < 1e-6:
            v = f"{v * 255:g}/255"
        parts.append(f"{k}={v}")
    return ", ".join(parts)


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _demo_markdown(rows: list[dict], meta: dict) -> str:
    lines = ["| method | how applied | crafting seconds | images/s | victim test accuracy |",
             "|---|---|---|---|---|"]
    for r in rows:
        secs = "–" if r["seconds"] is None else f"{r['seconds']:.1f}"
        ips = "–" if r["images_per_second"] is None else f"{r['images_per_second']:,.0f}"
        lines.append(f"| {r['method']} | {r['how']} | {secs} | {ips} | {100 * r['test_accuracy']:.1f} % |")
    v = meta["victim"]
    lines += [
        "",
        f"Data: {meta['data']}, {meta['n_train']} train / {meta['n_test']} test images; epsilon "
        f"{meta['epsilon_255']} (L-inf, checked after uint8 rounding); seed {meta['seed']}.",
        f"Victim (the same for every row, via evaluate()): {v['arch']}, {v['train']['epochs']} epochs, batch "
        f"{v['train']['batch_size']}, {'crop+flip' if v['train']['augment'] else 'no augmentation'}; device "
        f"{meta['device']}.",
        "Crafting seconds = craft() (if any) + the Dataset.map(protect(...)) pass, wall clock; images/s = train "
        "images / crafting seconds.",
        f"EM crafting options: class-wise {_options_text(meta['em_classwise'])} (paper: batch_size=512, at least "
        "10 rounds; the class noise gets about 20 updates per round either way: noise_batch_size); sample-wise "
        f"{_options_text(meta['em_samplewise'])} (paper: steps=20, step_size=0.8/255, at least 10 rounds: the same "
        "8/255 reach per round at a quarter of the cost). Everything else: the paper's defaults (EMConfig).",
        "EM noise as released (uint8 steps): class-wise mean |delta| "
        f"{meta['em_classwise_stats']['mean_abs_steps']:.2f}/255 after {meta['em_classwise_stats'].get('rounds')} "
        f"rounds (final surrogate error {_fmt(meta['em_classwise_stats'].get('final_error'))}); sample-wise mean "
        f"|delta| {meta['em_samplewise_stats']['mean_abs_steps']:.2f}/255 after "
        f"{meta['em_samplewise_stats'].get('rounds')} rounds (final surrogate error "
        f"{_fmt(meta['em_samplewise_stats'].get('final_error'))}).",
        f"bayes crafting options: {_options_text(meta['bayes']) or 'the defaults'} "
        f"({meta['bayes_stats'].get('passes')} passes); whole-set Bayes-error estimate "
        f"{_fmt(meta['bayes_stats'].get('bayes_error_before'))} -> {_fmt(meta['bayes_stats'].get('bayes_error_after'))}"
        f"; noise as released: mean |delta| {meta['bayes_stats']['mean_abs_steps']:.2f}/255.",
        f"Total demo wall time: {meta['wall_seconds']:.0f} s.",
    ]
    return "\n".join(lines)


def _noise_stats(noise) -> dict:
    """Crafting statistics (rounds, final surrogate error) and the size of the stored noise in uint8 steps."""
    import numpy as np

    steps = np.abs(noise.steps.astype(np.int16))
    out = {k: v for k, v in noise.config.stats.items() if k != "history"}
    out.update({"mean_abs_steps": round(float(steps.mean()), 3), "max_abs_steps": int(steps.max(initial=0)),
                "share_of_zero_steps": round(float((steps == 0).mean()), 3)})
    return out


def cmd_demo(args: argparse.Namespace) -> int:
    from . import craft, evaluate, protect
    from ._images import check_epsilon, epsilon_levels
    from .evaluate import VictimConfig
    from .training import device

    t_start = time.perf_counter()
    eps = check_epsilon(args.epsilon)
    sw_options = {**DEMO_SAMPLEWISE, **parse_options(args.samplewise_option)}
    sw_options["mode"] = "samplewise"
    cw_options = {**DEMO_CLASSWISE, **parse_options(args.classwise_option)}
    cw_options["mode"] = "classwise"
    bayes_options = {**DEMO_BAYES, **parse_options(args.bayes_option)}
    out_dir = Path(os.path.expanduser(args.output_dir))
    train = load_source(args.data, "train")
    test = load_source(args.data, "test")
    if len(train) > args.max_train:
        train = train.select(range(args.max_train))
    if len(test) > args.max_test:
        test = test.select(range(args.max_test))
    n = len(train)
    victim = VictimConfig.auto(args.epochs)
    progress = args.quiet == 0

    def victim_accuracy(data) -> tuple[float, dict]:
        report = evaluate(data, test, mix=[1.0], victim=victim, seed=args.seed, progress=progress)
        return report.accuracy("protected"), report.to_dict()

    rows: list[dict] = []
    reports: dict[str, dict] = {}

    def add(method: str, how: str, seconds: float | None, data) -> None:
        logger.info("training the victim on %s data", method)
        acc, rep = victim_accuracy(data)
        rows.append({"method": method, "how": how, "seconds": None if seconds is None else round(seconds, 2),
                     "images_per_second": None if seconds is None else round(n / max(seconds, 1e-9), 1),
                     "test_accuracy": acc})
        reports[method] = rep
        logger.info("%s: victim test accuracy %.2f %%", method, 100 * acc)

    add("clean", "no protection", None, train)

    logger.info("random noise, per batch")
    protected, secs = _timed_map(train, protect(method="random", epsilon=eps, seed=args.seed))
    add("random", 'per batch: ds.map(protect(method="random"))', secs, protected)

    logger.info("class-wise EM: craft (min-min) + protect(noise=...)")
    t0 = time.perf_counter()
    noise_cw = craft(train, "em", epsilon=eps, seed=args.seed, **cw_options)
    craft_cw = time.perf_counter() - t0
    protected, secs = _timed_map(train, protect(noise=noise_cw))
    add("EM class-wise", f'craft(ds, "em", mode="classwise", {_options_text(cw_options)}) + protect(noise=...)',
        craft_cw + secs, protected)

    logger.info("sample-wise EM: craft (min-min) + protect(noise=...)")
    t0 = time.perf_counter()
    noise_sw = craft(train, "em", epsilon=eps, seed=args.seed, **sw_options)
    craft_sw = time.perf_counter() - t0
    protected, secs = _timed_map(train, protect(noise=noise_sw))
    add("EM sample-wise", f'craft(ds, "em", mode="samplewise", {_options_text(sw_options)}) + protect(noise=...)',
        craft_sw + secs, protected)

    logger.info("bayes: craft (Bayes-error ascent over the whole set) + protect(noise=...)")
    t0 = time.perf_counter()
    noise_bayes = craft(train, "bayes", epsilon=eps, seed=args.seed, **bayes_options)
    craft_bayes = time.perf_counter() - t0
    protected, secs = _timed_map(train, protect(noise=noise_bayes))
    options_text = _options_text(bayes_options)
    add("bayes", f'craft(ds, "bayes"{", " + options_text if options_text else ""}) + protect(noise=...)',
        craft_bayes + secs, protected)

    meta = {"data": args.data, "n_train": n, "n_test": len(test), "epsilon": eps,
            "epsilon_255": f"{epsilon_levels(eps)}/255", "seed": args.seed, "victim": victim.to_dict(),
            "device": str(device()), "em_classwise": cw_options, "em_samplewise": sw_options,
            "em_classwise_stats": _noise_stats(noise_cw), "em_samplewise_stats": _noise_stats(noise_sw),
            "bayes": bayes_options, "bayes_stats": _noise_stats(noise_bayes),
            "wall_seconds": round(time.perf_counter() - t_start, 1)}
    md = _demo_markdown(rows, meta)
    print(md)
    write_text_atomic(str(out_dir / "demo.json"), json.dumps({"rows": rows, **meta, "reports": reports}, indent=2))
    write_text_atomic(str(out_dir / "demo.md"), md)
    logger.info("wrote %s and %s", out_dir / "demo.json", out_dir / "demo.md")
    return 0


# -- entry point -----------------------------------------------------------------------------------------------------
# -- certify / recover -----------------------------------------------------------------------------------------------
def cmd_train_surrogate(args: argparse.Namespace) -> int:
    from ._cli_train import train_surrogate_command

    for line in train_surrogate_command(args):
        print(line)
    return 0


def _add_theta_hat_options(p: argparse.ArgumentParser) -> None:
    from .surrogates.nets import ARCHITECTURES

    p.add_argument("--protected", required=True, metavar="SRC",
                   help=f"the protected training data theta-hat is trained on: {SOURCES_HELP}. Required.")
    p.add_argument("--protected-split", default="train", help="split of --protected. Default: train.")
    p.add_argument("--test", default="bundled", metavar="SRC", help=f"the clean test data: {SOURCES_HELP}. "
                                                                    "Default: bundled.")
    p.add_argument("--test-split", default="test", help="split of --test. Default: test.")
    p.add_argument("--victim", default=None, choices=sorted(ARCHITECTURES),
                   help="architecture of theta-hat. Default: resnet18 on CUDA, else the CPU-fast convnet.")
    p.add_argument("--epochs", type=_positive_int, default=None, metavar="N",
                   help="epochs to train theta-hat. Default: 60 on CUDA, 30 on CPU.")
    p.add_argument("--seed", type=int, default=0, help="seeds theta-hat's training and the draws. Default: 0.")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the result as JSON. Default: no.")
    p.add_argument("--image-column", default=None, help="image column of every dataset. Default: detected.")
    p.add_argument("--label-column", default=None, help="label column of every dataset. Default: detected.")
    p.add_argument("--resolution", type=_positive_int, default=32, metavar="N",
                   help="train and test at N x N: every image (any size) is resized to it. Default: 32.")
    _add_verbosity(p)


def _add_certify(sub) -> None:
    p = sub.add_parser(
        "certify", help="certified (q, eta)-learnability of protected data (PUE)",
        description=_wrap("Train theta-hat on the protected data (the victim trainer of `evaluate`), draw N weight "
                          "perturbations sigma*N(0, I), measure clean test accuracy for each, and print the certified "
                          "learnability per eta: an upper bound, with the given confidence, on the q-quantile of the "
                          "smoothed accuracy of every model within L2 distance eta of theta-hat (lower = stronger "
                          "protection; 'abstain' where N is too small for that eta)."),
        epilog="example:\n  hf-unlearnable certify --protected out/pue --test bundled --n 200 --etas 0 0.05 0.1",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_theta_hat_options(p)
    p.add_argument("--q", type=float, default=0.9, help="the quantile certified. Default: 0.9.")
    p.add_argument("--sigma", type=float, default=0.25, help="weight-noise standard deviation. Default: 0.25.")
    p.add_argument("--n", type=_positive_int, default=1000, help="weight draws (each one full test pass). "
                                                                "Default: 1000 (the paper's); use ~100-200 on a CPU.")
    p.add_argument("--confidence", type=float, default=0.99, help="confidence of the bound. Default: 0.99.")
    p.add_argument("--etas", type=float, nargs="+", default=None, metavar="ETA",
                   help="radii of the certified weight ball. Default: 0.001 ... 2.0 (the paper's grid).")
    p.set_defaults(func=cmd_certify)


def cmd_certify(args: argparse.Namespace) -> int:
    from . import certify

    check_file_outputs(json=args.json)
    cert = certify(load_source(args.protected, args.protected_split), load_source(args.test, args.test_split),
                   q=args.q, sigma=args.sigma, n=args.n, confidence=args.confidence, etas=args.etas,
                   seed=args.seed, victim=args.victim, epochs=args.epochs, image_column=args.image_column,
                   label_column=args.label_column, progress=args.quiet == 0, resolution=args.resolution)
    print(cert.to_markdown())
    if args.json:
        write_text_atomic(args.json, json.dumps(cert.to_dict(), indent=2))
    return 0


def _add_recover(sub) -> None:
    from .certify import DEFAULT_RECOVERY_ETAS

    p = sub.add_parser(
        "recover", help="weight-recovery attack on a model trained on protected data (PUE)",
        description=_wrap("Train theta-hat on the protected data, then for each eta fine-tune it on a small clean set "
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
    p.add_argument("--recover-epochs", type=_positive_int, default=10, help="fine-tuning epochs. Default: 10.")
    p.add_argument("--lr", type=float, default=0.01, help="fine-tuning learning rate (cosine). Default: 0.01.")
    p.set_defaults(func=cmd_recover)


def cmd_recover(args: argparse.Namespace) -> int:
    from ._data import load_labelled
    from ._images import check_resolution
    from .certify import _train_theta_hat, recover

    check_file_outputs(json=args.json)
    cols = dict(image_column=args.image_column, label_column=args.label_column)
    size = check_resolution(args.resolution)
    protected = load_labelled(load_source(args.protected, args.protected_split), desc="Reading protected",
                              resolution=size, **cols)
    model, _ = _train_theta_hat(protected, args.victim, args.epochs, args.seed, args.quiet == 0)
    res = recover(model, load_source(args.clean, args.clean_split), load_source(args.test, args.test_split),
                  etas=args.etas, epochs=args.recover_epochs, lr=args.lr, seed=args.seed,
                  progress=args.quiet == 0, resolution=size, **cols)
    print(f"theta-hat test accuracy: {100 * res['base_accuracy']:.2f} %\n\n| eta | test accuracy after recovery |\n|---|---|")
    for point in res["curve"]:
        print(f"| {point['eta']:g} | {100 * point['test_accuracy']:.2f} % |")
    if args.json:
        write_text_atomic(args.json, json.dumps(res, indent=2))
    return 0


def _add_push(sub) -> None:
    p = sub.add_parser(
        "push", help="publish a protected dataset on the Hub with its card and protection.json",
        description=_wrap("Push a protected split (what `protect` wrote) to a Hub dataset repo as one config per "
                          "method and epsilon, with a card that states what was done (method, epsilon, seed, "
                          "version, source), which columns changed and the image quality (with --original), the "
                          "measured victim accuracy (with --report, the JSON of `evaluate --json`) and the limits, "
                          "plus protection.json. Card text written by hand is never replaced unless "
                          "--overwrite-card."),
        epilog="example:\n  hf-unlearnable push --protected out/em-cw --noise noise/em-cw --original bundled "
               "--report report.json --source-dataset uoft-cs/cifar10 --repo-id me/cifar10-unlearnable",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--protected", required=True, metavar="SRC", help=f"the protected data: {SOURCES_HELP}.")
    p.add_argument("--split", default="train", help="split of --protected, and the split name on the Hub. Default: train.")
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
    _add_verbosity(p)
    p.set_defaults(func=cmd_push)


def cmd_push(args: argparse.Namespace) -> int:
    from . import load_noise, push_protected
    from .evaluate import Report

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


def build_parser() -> argparse.ArgumentParser:
    from . import __version__, _cli_train

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Make an image dataset unlearnable before releasing it (small perturbations, L-inf <= "
                    "epsilon, after which a model trained on the data fails on clean test data), and measure it.",
        epilog=f"Run `{PROG} COMMAND --help` for the options of each command.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_protect(sub)
    _add_craft(sub)
    _add_evaluate(sub)
    _add_certify(sub)
    _add_recover(sub)
    _add_push(sub)
    _cli_train.add_parser(sub)
    sub.choices["train-surrogate"].set_defaults(func=cmd_train_surrogate)
    _add_demo(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad input, 130 interrupted)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (argparse already printed it)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    verbosity = args.verbose - args.quiet
    with _logging(verbosity), interrupts() as interrupted:
        try:
            return int(args.func(args) or 0)
        except ProtectionError as exc:
            print(f"error: {exc}{_command_line_hint(str(exc))}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except Exception as exc:    # the OS, the network, a worker pool: one line, never a traceback unless -v
            if interrupted():       # e.g. a worker pool's TimeoutError while Ctrl-C tears it down
                print("interrupted", file=sys.stderr)
                return 130
            if verbosity > 0:
                traceback.print_exc()
            print(f"error: {describe_failure(exc)}", file=sys.stderr)
            return 2


def _command_line_hint(message: str) -> str:
    """The library's messages name Python arguments; on the command line the same fix is a flag."""
    flags = [f"--{name.replace('_', '-')}" for name in ("image_column", "label_column", "id_column", "resolution",
                                                         "class_map", "clusters", "adversarial_epsilon", "checkpoint_dir")
             if f"{name}=" in message]
    return f"\n(on the command line: {' / '.join(flags)})" if flags else ""


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
