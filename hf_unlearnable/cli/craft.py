"""`hf-unlearnable craft`: run a method's dataset-level algorithm (e.g. EM's min-min) and save the noise."""

from __future__ import annotations

import argparse
import logging
import time

from .._atomic import atomic_dir
from ..errors import ProtectionError
from ._common import add_common, add_verbosity, check_output, given, load_source, parse_epsilon, parse_options, \
    positive_int, wrap

logger = logging.getLogger("hf_unlearnable.cli")


def register(sub) -> None:
    from ..methods import METHODS

    p = sub.add_parser(
        "craft", help="craft noise over a whole dataset (e.g. EM's min-min) and save it",
        description=wrap("Run a method's full dataset-level algorithm (for em: the paper's bi-level min-min, a fresh "
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
    add_common(p)
    p.add_argument("--method", default="em", metavar="NAME",
                   help=f"method to craft, one of {sorted(METHODS)}. Default: em.")
    p.add_argument("--mode", choices=("classwise", "samplewise"), default=None,
                   help="for methods with modes (em): one noise per class (classwise: fast, ~a minute on 2,000 "
                        "CPU images) or one per image (samplewise: ~20x the compute). Default: classwise where the "
                        "method has it (rem's noise is samplewise only).")
    p.add_argument("--epsilon", type=parse_epsilon, default=None,
                   help="L-inf budget in [0, 1] pixel units: 8/255 or a float. Default: the method's (8/255).")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a method option, repeatable, e.g. --option max_iters=10 --option steps=10; values are read "
                        "as JSON when possible, a/b as a fraction, else as a string. Default: the paper's values.")
    p.add_argument("--id-column", default=None,
                   help="column of stable row ids (sample-wise noise). Default: 'id' if present, else a hash of "
                        "the original pixels.")
    p.add_argument("--checkpoint-dir", default=None, metavar="DIR",
                   help="save the crafting state after every round and resume from it after an interruption. "
                        "Default: no checkpoints.")
    p.add_argument("--resolution", type=positive_int, default=None, metavar="N",
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
    add_verbosity(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import craft
    from ..methods import get_method

    options = parse_options(args.option)
    cls = get_method(args.method)
    if "mode" in cls.config_class.__dataclass_fields__:
        if "mode" in options and args.mode is not None:
            raise ProtectionError("give the mode once: --mode or --option mode=..., not both.")
        options.setdefault("mode", args.mode or _default_mode(cls, args.method))
    elif args.mode is not None:
        raise ProtectionError(f"method {args.method!r} has no modes; drop --mode.")
    cls.config_class.from_options(args.method, seed=args.seed, **given(epsilon=args.epsilon), **options)  # fail fast
    target = check_output(args.output, args.overwrite, args.data)
    ds = load_source(args.data, args.split, args.config, args.revision)
    logger.info("crafting %s noise over %d rows of %s [%s] (options %s)", args.method, len(ds), args.data,
                args.split, options)
    t0 = time.perf_counter()
    noise = craft(ds, args.method, epsilon=args.epsilon, seed=args.seed, checkpoint_dir=args.checkpoint_dir,
                  image_column=args.image_column, label_column=args.label_column, id_column=args.id_column,
                  **given(resolution=args.resolution, clusters=args.clusters), **options)
    seconds = time.perf_counter() - t0
    import torch.distributed as dist

    launched = dist.is_available() and dist.is_initialized()   # accelerate launch / torchrun: craft set it up
    try:
        if not launched or dist.get_rank() == 0:    # every process holds the same noise; the main one saves it
            with atomic_dir(target) as tmp:
                noise.save_pretrained(tmp)
            logger.info("%r crafted in %.1f s, saved to %s", noise, seconds, target)
            print(target)
    finally:
        if launched:    # wait for every process, then take the group down (a gloo peer exiting early can abort)
            dist.barrier()
            dist.destroy_process_group()
    return 0


def _default_mode(cls, method: str) -> str:
    """classwise (the fast one) where the method takes it, else the method's own (rem: samplewise only)."""
    try:
        cls.config_class.from_options(method, mode="classwise")
    except ProtectionError:
        return cls.config_class.mode
    return "classwise"
