"""The datasets.map-compatible transform: decode -> method (or crafted noise) -> quantise -> fresh PNG.

    protected = ds.map(protect(method="em"), batched=True)
    protected = ds.map(protect(noise=noise), batched=True, with_indices=True)   # errors then name dataset rows

The callable pickles to its configuration only (method name + JSON options, or the Noise; a Surrogate as its
config + safetensors bytes), so datasets computes the same fingerprint for the same call and reuses its cache.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from typing import Any, Sequence

import numpy as np
import PIL.Image

from ._classmap import batch_label_column, check_class_map, map_labels
from ._data import check_column_names, check_labels, find_batch_columns, real_class_names, row_ids, row_in_batch
from ._images import (add_steps, check_epsilon, check_resolution, colour_channels, decode_images, encode_png,
                      epsilon_levels, fit_steps, group_by_shape, open_image_cell, png_image, resize_steps,
                      working_rgb)
from ._norms import budget, describe, measure, to_steps
from .errors import ProtectionError
from .methods import get_method
from .noise import Noise

DEFAULT_EPSILON = 8 / 255
logger = logging.getLogger(__name__)

# Dataset.map(num_proc=N) forks workers. If torch already ran its OpenMP thread pool in the parent (crafting,
# an earlier map), torch in a forked child deadlocks; each worker is its own process, so it runs torch on one thread.
_FORKED = False


def _mark_forked() -> None:
    global _FORKED
    _FORKED = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_mark_forked)


def _torch_after_fork() -> None:
    import sys

    torch = sys.modules.get("torch")
    if _FORKED and torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


class ProtectTransform:
    """Callable for `Dataset.map(..., batched=True)`. Build it with `protect(...)`."""

    def __init__(self, method: str | None, noise: Noise | None, epsilon: float | None, seed: int,
                 image_column: str | None, label_column: str | None, id_column: str | None, options: dict,
                 resolution: Any = None, class_map: Any = None):
        if (method is None) == (noise is None):
            raise ProtectionError("pass exactly one of method='...' (e.g. 'em', 'random') or noise=<Noise>.")
        if noise is not None and not isinstance(noise, Noise):
            raise ProtectionError(f"noise= must be a Noise (see load_noise), got {type(noise).__name__}.")
        self.resolution = check_resolution(resolution)
        if self.resolution is not None and noise is not None:
            raise ProtectionError("resolution= applies to method=; noise= is applied at each image's own size from "
                                  f"the size it was crafted at ({noise.resolution[0]}x{noise.resolution[1]}).")
        self.class_map = check_class_map(class_map, noise)
        self.image_column = image_column
        self.label_column = label_column
        self.id_column = id_column
        if noise is not None:
            if not isinstance(noise, Noise):
                raise ProtectionError(f"noise= must be a Noise (see load_noise), got {type(noise).__name__}.")
            if options:
                raise ProtectionError(f"options {sorted(options)} apply to methods, not to noise=.")
            if epsilon is not None and epsilon_levels(check_epsilon(epsilon)) < epsilon_levels(noise.epsilon):
                raise ProtectionError(
                    f"epsilon={check_epsilon(epsilon):.4f} is smaller than the noise's own budget "
                    f"{noise.config.epsilon_255}: craft the noise at this epsilon, or leave epsilon unset.")
            self.method_name = None
            self.noise = noise
            self.norm = "linf"
            self.epsilon = noise.epsilon
            self.seed = int(seed)
            self._method_state: dict | None = None
        else:
            cls = get_method(method)
            # epsilon=None: the method's own default budget, in its own norm (8/255 L-inf for most; AR L2 1.0)
            budget = {} if epsilon is None else {"epsilon": epsilon}
            cfg = cls.config_class.from_options(method, seed=seed, **budget, **options)
            self.method_name = method
            self.noise = None
            self.norm = cls.norm
            self.epsilon = cfg.epsilon
            self.seed = cfg.seed
            self._method_state = _freeze_options(cfg)
            self._method = cls(cfg)  # built now so bad options fail here, not inside map()
            if self.resolution is not None and not cls.uses_resolution:
                raise ProtectionError(f"resolution= applies to methods that run a network; {method!r} draws its noise "
                                      "at each image's own size. Drop resolution=.")

    # -- pickling: configuration only (datasets hashes this for its cache fingerprint) --------------------------
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_method", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def _get_method(self):
        if getattr(self, "_method", None) is None:
            cls = get_method(self.method_name)
            self._method = cls(cls.config_class.from_options(self.method_name, **_thaw_options(self._method_state)))
        return self._method

    def __repr__(self) -> str:
        what = f"method={self.method_name!r}" if self.noise is None else f"noise={self.noise!r}"
        return f"protect({what}, budget {describe(self.norm, self.epsilon)}, seed={self.seed})"

    # -- the map function ---------------------------------------------------------------------------------------
    def __call__(self, batch: dict, indices: Sequence[int] | None = None) -> dict:
        if not hasattr(batch, "keys"):   # Dataset.map(..., input_columns=[...]) passes the columns' values instead
            raise ProtectionError("protect() needs whole batches (a dict of columns): drop input_columns= from "
                                  "Dataset.map, and name the columns with image_column= / label_column= instead.")
        _torch_after_fork()      # before any torch call in a forked map worker (methods, cluster assignment)
        method = self._get_method() if self.noise is None else None
        noise = self.noise
        need_label = ((noise is not None and noise.kind == "classwise" and noise.centroids is None)
                      or bool(method and method.uses_labels))
        img_col, lab_col = find_batch_columns(batch, self.image_column, self.label_column, False)
        if need_label and lab_col is None:
            lab_col = batch_label_column(batch, img_col)
            if lab_col is None and noise is not None:     # class-wise noise by label: no silent fallback
                find_batch_columns(batch, img_col, None, True)
        agnostic = method is not None and method.uses_labels and lab_col is None   # pseudo-classes per batch
        if noise is not None and noise.kind == "classwise" and lab_col is not None and noise.centroids is None \
                and self.class_map is None:
            _check_class_names(noise, batch, lab_col)
        cells = _image_cells(batch, img_col, indices)
        # IterableDataset.map hands plain dicts of decoded images and forgets the output's features: images given
        # as images come back as images. Dataset.map (a LazyBatch) and raw cells keep the encoded PNG cell.
        as_images = type(batch) is dict and bool(cells) and all(isinstance(c, PIL.Image.Image) for c in cells)
        images = decode_images(cells, img_col, indices)
        if not images:
            return {img_col: []}
        labels = None
        if lab_col is not None and need_label:
            num_classes = None if self.class_map is not None or noise is not None and noise.centroids is not None \
                else (len(noise) if noise is not None else getattr(method, "num_classes", None))
            labels = check_labels(batch[lab_col], lab_col, num_classes, indices)
            if self.class_map is not None:
                labels = map_labels(self.class_map, labels, noise, batch, lab_col, indices)
        # ids key sample-wise noise and seed per-batch noise; class-wise noise goes by label
        ids = row_ids(batch, images, self.id_column, indices,
                      check=noise is None or noise.kind == "samplewise")
        k = epsilon_levels(self.epsilon)
        if noise is not None:
            if noise.centroids is not None:      # label-agnostic class-wise noise: each image's nearest cluster
                from ._clusters import assign

                size = noise.resolution
                labels = assign(np.stack([working_rgb(a, size) for a in images]), noise.centroids,
                                (noise.config.clustering or {}).get("surrogate"))
            # stored patterns at the crafted size; each is brought to its image's size only when it is applied
            small = noise.patterns_for(labels, ids, len(images), indices)
            fit = resize_steps
        else:
            small = self._method_deltas(method, images, labels, ids, agnostic)
            fit = functools.partial(fit_steps, k=k)
        if self.norm != "linf":       # L2 / L0 budgets: rounded inside the norm at each image's own size
            fit = functools.partial(to_steps, self.norm, epsilon=self.epsilon)
        out = []
        for i, img in enumerate(images):
            # one image's full-size steps at a time: memory stays near the decoded images themselves
            new = add_steps(img, fit(small[i], img.shape))
            # The contract, checked on every row rather than trusted: within budget after quantisation, alpha kept.
            c = colour_channels(img)
            diff = new.astype(np.int16)
            diff -= img
            np.abs(diff, out=diff)
            over = diff.max() > k if self.norm == "linf" else \
                measure(self.norm, diff[:, :, :c]) > budget(self.norm, self.epsilon, img.shape) + 1e-6
            if over or diff[:, :, c:].any():
                raise RuntimeError("internal error: a protected image exceeds its budget")
            if not diff.any() and method is not None and method.sets_pixels:
                logger.warning("column %r, %s: already holds its class's %s pixels, so it is released as it is (it "
                               "carries the shortcut already)", img_col, row_in_batch(i, indices), method.name)
            elif not diff.any():
                raise ProtectionError(
                    f"column {img_col!r}, {row_in_batch(i, indices)}: the noise leaves this image unchanged (it rounds "
                    "to zero, or every pixel it would move is already at 0 or 255), so it would be released "
                    "unprotected. Use a larger epsilon or another method for it, or leave the row out.")
            cell = encode_png(new)           # PNG bytes, not the decoded copy, are what the batch keeps
            out.append(png_image(cell) if as_images else cell)
        return {img_col: out}

    def _method_deltas(self, method, images: list, labels, ids: list, agnostic: bool) -> list:
        """The method's noise for every row, in pixel units: methods that run a network work at the working
        resolution (one batch of equal-size RGB images); the others at each image's own size."""
        out: list[Any] = [None] * len(images)
        if not method.uses_resolution:
            sized = [working_rgb(a) for a in images]
            groups = group_by_shape(sized)
        else:
            size = self.resolution or method.working_resolution()
            sized = [working_rgb(a, size) for a in images]
            groups = {size: list(range(len(images)))}
        for _, pos in groups.items():
            stack = np.stack([sized[i] for i in pos])
            lab = None if labels is None else labels[pos]
            if agnostic:
                lab = method.pseudo_labels(stack)
            delta = method.perturb(stack, lab, [ids[i] for i in pos])
            for j, i in enumerate(pos):
                out[i] = delta[j]
        return out


def _image_cells(batch: dict, column: str, indices: Sequence[int] | None) -> list:
    """The image cells of a batch. When datasets itself cannot decode one (corrupt bytes), name its row."""
    try:
        values = batch[column]
    except ProtectionError:
        raise
    except Exception as exc:
        table = getattr(batch, "pa_table", None)
        if table is not None and column in table.column_names:
            for i, cell in enumerate(table.column(column).to_pylist()):
                if isinstance(cell, dict):
                    open_image_cell(cell, column, i, indices)   # raises a ProtectionError naming the bad row
        raise ProtectionError(f"column {column!r}: the images of this batch cannot be decoded "
                              f"({type(exc).__name__}: {exc}). Re-encode or drop the bad rows.") from None
    if not isinstance(values, (list, tuple)):
        raise ProtectionError("protect(...) transforms whole batches: call ds.map(protect(...), batched=True).")
    return values


def _freeze_options(cfg) -> dict:
    """Config -> picklable, deterministic dict; a Surrogate option becomes its config + safetensors bytes."""
    from .surrogates import Surrogate

    state = {}
    for name in (f.name for f in dataclasses.fields(cfg)):     # not __dataclass_fields__: that holds ClassVars
        value = getattr(cfg, name)
        if isinstance(value, Surrogate):
            from dataclasses import asdict

            from safetensors.torch import save

            weights = save({k: v.detach().cpu().contiguous() for k, v in value.model.state_dict().items()})
            value = ("__surrogate__", asdict(value.config), weights, value.name_or_path)
        state[name] = value
    return state


def _thaw_options(state: dict) -> dict:
    from .surrogates import Surrogate, SurrogateConfig

    out = {}
    for name, value in state.items():
        if isinstance(value, tuple) and value and value[0] == "__surrogate__":
            from safetensors.torch import load

            _, cfg, weights, name_or_path = value
            sur = Surrogate(SurrogateConfig(**cfg), name_or_path=name_or_path)
            sur.model.load_state_dict(load(weights))
            value = sur.eval()
        out[name] = value
    return out


def protect(method: str | None = None, *, noise: Noise | None = None, epsilon: float | None = None, seed: int = 0,
            image_column: str | None = None, label_column: str | None = None, id_column: str | None = None,
            resolution: int | tuple[int, int] | None = None, class_map: str | dict | None = None,
            **options: Any) -> ProtectTransform:
    """A picklable transform for `Dataset.map(..., batched=True)` that protects the image column.

    Exactly one of `method` (a name in METHODS, applied per batch) or `noise` (a crafted Noise, applied
    class-wise by label or sample-wise by row id). `epsilon` is the L-inf budget in [0, 1] pixel units
    (default 8/255; with `noise`, the noise's own budget). Every other column, the row order and the row count
    are kept; images come back as fresh PNGs within epsilon of the input after uint8 rounding. Pass
    `with_indices=True` to `map` so that errors name dataset rows. `**options` go to the method's config
    (e.g. `protect(method="em", steps=10)`).

    Images of any size keep their size and mode ('RGB', 'RGBA', 'L', 'LA'; alpha is kept byte for byte, gray stays
    gray). Methods that run a network work at `resolution` (an int side or (h, w); default: what their surrogate
    was made for, 32 for the bundled one) and their noise is resized to each image's own size inside epsilon;
    crafted noise is resized from the size it was crafted at. Without a label column, methods that need classes
    use the surrogate's predicted class of each image. `class_map` applies class-wise noise to a dataset with
    other classes, explicitly: "index" (your class k gets pattern k) or {your class: noise class} (names or
    indices); recorded by push_protected.
    """
    check_column_names(image_column=image_column, label_column=label_column, id_column=id_column)
    return ProtectTransform(method, noise, epsilon, seed, image_column, label_column, id_column, options,
                            resolution, class_map)


def _check_class_names(noise, batch, label_column: str) -> None:
    """Class-wise noise is applied by label index: the dataset's ClassLabel names must be the noise's, in the same
    order (noise crafted on ["cat", "dog"] would give "dog" rows the cat pattern on ["dog", "cat"])."""
    features = getattr(getattr(batch, "formatter", None), "features", None)
    feat = features.get(label_column) if features is not None else None
    names, ours = real_class_names(getattr(feat, "names", None)), real_class_names(noise.config.class_names)
    if names and ours and names != ours:     # where either side is unnamed there is nothing to compare
        raise ProtectionError(f"column {label_column!r} names its classes {names}, but this class-wise noise was "
                              f"crafted for {ours}: a row would get another class's pattern. Reorder the labels "
                              "(ds.align_labels_with_mapping(...)), map them explicitly with class_map= (e.g. "
                              "class_map='index'), or craft noise for this dataset.")
