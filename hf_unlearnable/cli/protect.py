"""`hf-unlearnable protect`: map protect(...) over a dataset (a method per batch, or a crafted noise) and save it."""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path

from .._atomic import atomic_dir, scratch_dir
from ..data import FORMATS, write_dataset
from ..errors import ProtectionError
from ._common import add_common, add_verbosity, check_output, given, load_source, parse_class_map, parse_epsilon, \
    parse_options, positive_int, wrap

logger = logging.getLogger("hf_unlearnable.cli")


def register(sub) -> None:
    from ..methods import METHODS

    p = sub.add_parser(
        "protect", help="protect a dataset per batch with a method or a crafted noise, and save it",
        description=wrap("Load a dataset, map protect(...) over it (batched, with row indices, so errors name "
                         "rows), and write the result (--format: Arrow, Parquet or an image folder) and/or publish it "
                         "(--push). The output is written to a temporary "
                         "sibling folder and renamed into place only when complete. Images come back as fresh PNGs "
                         "within epsilon of the originals after uint8 rounding; every other column, the row order "
                         "and the row count are kept."),
        epilog="examples:\n"
               "  hf-unlearnable protect --method random --output out/random\n"
               "  hf-unlearnable protect --method em --option steps=10 --output out/em\n"
               "  hf-unlearnable craft --method em --mode classwise --output noise/em-cw\n"
               "  hf-unlearnable protect --noise noise/em-cw --output out/em-cw\n"
               "  hf-unlearnable protect --data photos/ --method em --format imagefolder --output photos-protected/\n"
               "  hf-unlearnable protect --data me/photos --method em --push me/photos-protected",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p)
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
                   help="the budget in the method's norm: L-inf in [0, 1] pixel units, 8/255 or a float such as "
                        "0.0314 (8 alone is refused: did you mean 8/255?); for ar and lsp an L2 norm per 32x32 "
                        "image. Default: the method's own (8/255 for L-inf methods); with --noise, the noise's.")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a method option, repeatable, e.g. --option steps=10 --option random_start=true; values are "
                        "read as JSON when possible (ints, floats, true/false, null), a/b as a fraction, else as a "
                        "string. Default: the method's (paper) defaults.")
    p.add_argument("--id-column", default=None,
                   help="column of stable row ids that keys sample-wise noise. Default: 'id' if present, else a "
                        "hash of the original pixels.")
    p.add_argument("--resolution", type=positive_int, default=None, metavar="N",
                   help="working size (N x N) of methods that run a network; their noise is resized to each image's "
                        "own size, which the output keeps. Default: the surrogate's (32 for the bundled one).")
    p.add_argument("--class-map", type=parse_class_map, default=None, metavar="MAP",
                   help="with --noise (class-wise): apply it to a dataset with other classes. 'index' (your class k "
                        "gets pattern k) or a JSON object {your class: noise class}, names or indices, e.g. "
                        "'{\"tabby\": \"cat\", \"3\": 5}'. Default: the dataset's classes must be the noise's.")
    p.add_argument("--output", default=None, metavar="DIR",
                   help="folder to write, in --format. Required unless --push is given.")
    p.add_argument("--format", choices=FORMATS, default="arrow",
                   help="arrow: Dataset.save_to_disk; parquet: the Hub's layout, data/<split>-00000-of-00001.parquet; "
                        "imagefolder: <output>/<class name>/<source file stem>.png (the other columns, if any, in "
                        "metadata.jsonl), which load_dataset('imagefolder', data_dir=...) reads back. A file_name "
                        "column (image folders get one) is kept in every format. Default: arrow.")
    p.add_argument("--push", default=None, metavar="REPO_ID",
                   help="also publish the protected split to this Hub dataset repo with its card and "
                        "protection.json, as push_protected does (the source is the card's 'original'). Default: no.")
    p.add_argument("--private", action="store_true", help="with --push: create the repo private.")
    p.add_argument("--token", default=None, help="with --push: a Hub write token. Default: $HF_TOKEN or the login.")
    p.add_argument("--overwrite", action="store_true", help="replace --output if it exists. Default: refuse.")
    p.add_argument("--num-proc", type=positive_int, default=None, metavar="N",
                   help="processes for Dataset.map and save_to_disk; output bytes do not depend on it. Default: 1.")
    p.add_argument("--batch-size", type=positive_int, default=256, metavar="N",
                   help="rows per map batch. Default: 256.")
    add_verbosity(p)
    p.set_defaults(func=run)


def _check_num_proc(method: str, num_proc: int | None) -> None:
    """Several processes split the rows into other batches: refused where the batch shapes the bytes."""
    from ..methods import METHODS

    cls = METHODS.get(method)
    if num_proc is not None and num_proc > 1 and cls is not None and cls.batch_coupled:
        raise ProtectionError(f"--num-proc {num_proc}: {method}'s per-batch noise depends on which rows share a batch, "
                              "and several processes batch the rows differently, so the bytes would depend on "
                              f"--num-proc. Run with --num-proc 1, or craft it over the whole set (`craft --method "
                              f"{method}`, which splits across processes itself) and apply that with --noise DIR "
                              "--num-proc N.")


def run(args: argparse.Namespace) -> int:
    from .. import load_noise, protect

    options = parse_options(args.option)
    cols = dict(image_column=args.image_column, label_column=args.label_column, id_column=args.id_column)
    cols.update(given(resolution=args.resolution, class_map=args.class_map))
    if args.noise is not None:
        transform = protect(noise=load_noise(args.noise), epsilon=args.epsilon, seed=args.seed, **cols, **options)
    else:
        _check_num_proc(args.method or "em", args.num_proc)
        transform = protect(args.method or "em", epsilon=args.epsilon, seed=args.seed, **cols, **options)
    if args.output is None and args.push is None:
        raise ProtectionError("nowhere to put the protected data: pass --output DIR, --push REPO_ID, or both.")
    if args.push is None and (args.private or args.token):
        raise ProtectionError("--private and --token apply to --push; add --push REPO_ID or drop them.")
    target = (check_output(args.output, args.overwrite, args.data, args.noise)   # after the options: say what's wrong
              if args.output is not None else None)
    ds = load_source(args.data, args.split, args.config, args.revision)
    logger.info("protecting %d rows of %s [%s] with %r", len(ds), args.data, args.split, transform)
    # the output (or, pushing only, a temporary folder) gets map's own cache in a scratch folder beside it (not the
    # source folder or the HF cache, which may be read-only or shared), deleted once the result is written
    with (atomic_dir(target) if target is not None else tempfile.TemporaryDirectory()) as tmp:
        tmp = Path(tmp)
        scratch = (scratch_dir(tmp.parent, f".{target.name}.map-") if target is not None
                   else scratch_dir(tmp, ".map-"))
        try:
            t0 = time.perf_counter()
            out = ds.map(transform, batched=True, with_indices=True, batch_size=args.batch_size,
                         num_proc=args.num_proc, cache_file_name=str(scratch / "protected.arrow"),
                         load_from_cache_file=False, desc="Protecting")
            seconds = time.perf_counter() - t0
            if target is not None:
                write_dataset({args.split: out}, tmp, args.format, num_proc=args.num_proc)
            if args.push is not None:
                _push(out, ds, transform, args)
            n_rows = len(out)
            del out
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    logger.info("protected %d rows (%.1f s protecting, %.0f images/s)", n_rows, seconds, n_rows / max(seconds, 1e-9))
    if target is not None:
        print(target)
    return 0


def _push(out, original, transform, args: argparse.Namespace) -> None:
    from .. import push_protected
    from ..data import hub_dataset_id

    source = hub_dataset_id(args.data)      # the card names a Hub source (its license is inherited)
    result = push_protected(out, args.push, transform=transform, original=original, split=args.split,
                            private=args.private, token=args.token, source_dataset=source,
                            source_revision=args.revision if source is not None else None)
    print(f"{result.repo_id} config {result.config_name} split {result.split} @ {result.revision} "
          f"(commit {result.commit_oid})")
