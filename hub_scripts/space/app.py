"""Gradio Space: protect one picture in the browser with hf_unlearnable.

Upload an image, pick a method, choose epsilon (1-16 /255), press Protect: the page shows the protected image, an
amplified noise map, the measured L-inf and PSNR, and offers the result as a lossless PNG. Methods whose budget is
another norm (ar and lsp: L2, ops: L0) use their own default budget; the slider, an L-inf budget, is off for them.

    python hub_scripts/space/app.py                          # http://127.0.0.1:7860
    python hub_scripts/space/app.py --noise noise/em-cw      # also offer a class-wise noise bank (repeatable)
    HF_UNLEARNABLE_SPACE_NOISE="user/em-cifar10,noise/pue" python app.py   # the same through an env variable

On a Space, the noise banks are the repos in README.md's `models:` list (deploy.py --noise writes it).

Methods offered: every registered method with a per-batch form (`hf_unlearnable.methods.METHODS`, `per_batch`)
that can protect a single image, plus the class-wise noise banks (README `models:`, --noise, the env variable),
applied by the class the user picks (the bank's own class names; a label-agnostic bank picks its nearest cluster
itself). Protection is one call of the library's own transform (`protect(...)`) on a one-row batch holding the whole
picture, as `Dataset.map` calls it: the library works at the method's resolution, brings the noise to the
picture's own size, checks the budget, rounds to uint8 and encodes the PNG, and the download is that PNG, byte for
byte. The picture keeps its size and mode as the library keeps them: RGB, RGBA (alpha byte for byte), L and LA
(grey stays grey). Palette images become RGB, or RGBA when they have transparency (lossless); 1-bit becomes L,
CMYK / YCbCr / LAB / HSV become RGB, each with a note in the report; 16-bit and floating-point images are refused.

Sizes: methods that run a network (em) craft their noise at the network's input size (32 x 32 for the bundled
CIFAR-10 surrogate) and the library resizes it to the picture (nearest neighbour: whole uint8 steps at full
strength, so the epsilon bound is exact); class-wise banks are resized from the size they were crafted at the same
way. So em's cost no longer grows with the picture; only decoding, applying the noise and encoding do, and those
cost the same for every method. Images above --max-pixels (24 MP, e.g. 6000 x 4000) are refused before they are
decoded; --max-network-pixels can set a lower limit for methods that run a network, but by default it is the same
limit, because em now costs what random costs. Measured on this project's 2-core machine (one torch thread,
another job running beside it, so the seconds are rough), a fresh process per run, with the upload, protection,
both PNGs and the measurements, as peak RSS above the warmed-up process:

    picture          method   now (one call of the library)   before (tiles: 512 x 512, em 32 x 32)
    1024 x 1024      em        0.4 s,    +69 MiB               20 s,  +200 MiB
    1920 x 1080      em        0.9 s,   +144 MiB               52 s,  +224 MiB
    4000 x 3000      em        4.6 s,   +790 MiB               refused (above 2.1 MP; ~5 min at 25 s/MP, extrapolated)
    4000 x 3000      random    6.7 s,   +824 MiB               7.1 s, +148 MiB
    4000 x 3000      bank      4.7 s,   +789 MiB               2.4 s, +149 MiB
    6000 x 4000      em       11.4 s,  +1580 MiB               refused
    6000 x 4000      random   17.3 s,  +1648 MiB               15 s,  +297 MiB
    6000 x 4000      bank      6.0 s,  +1579 MiB               (not measured)

em now perturbs 99.9 % of the pixels of a 4000 x 3000 photo (tiles: 99.98 %). Memory grows with the picture
(about 66 bytes per pixel, most of it inside the library's transform, which works on the whole picture: float
noise at full size, the int16 sum, the budget check), where tiles kept it nearly flat; at the 24 MP limit a request
peaks at about 2 GiB RSS, well inside cpu-basic's 16 GB, and the page runs one request at a time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

# Before gradio / huggingface_hub are imported (both read these at import): no analytics, no telemetry calls.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

try:
    import hf_unlearnable  # noqa: E402,F401
except ImportError as exc:  # pragma: no cover - a deployment mistake, not a code path
    raise SystemExit(f"hf_unlearnable is not importable ({exc}). Install it (pip install -e . in a checkout), or "
                     "deploy the Space with hub_scripts/space/deploy.py, which uploads the package beside app.py.")

# the page's two halves beside this file (a Space runs app.py from its root; tests load it by path)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from space_catalogue import (EPS_DEFAULT, EPS_MAX, EPS_MIN, MAX_PIXELS, NOISE_ENV, OUTPUT_MAX_AGE_S,  # noqa: E402
                             SEED, Catalogue, Choice, Limits, build_catalogue, noise_specs_from_env,
                             noise_specs_from_readme)
from space_protection import (Result, _mp, decode_png, linf_steps, noise_map, protect_array,  # noqa: E402
                              protect_png, protect_upload, psnr_db, read_image, report_text)
from hf_unlearnable import ProtectionError  # noqa: E402
from hf_unlearnable._norms import describe  # noqa: E402

__all__ = ["EPS_DEFAULT", "EPS_MAX", "EPS_MIN", "MAX_PIXELS", "NOISE_ENV", "SEED", "Catalogue", "Choice", "Limits",
           "Result", "build_catalogue", "build_demo", "decode_png", "linf_steps", "main", "noise_map",
           "noise_specs_from_env", "noise_specs_from_readme", "protect_array", "protect_png", "protect_upload",
           "psnr_db", "read_image", "report_text"]


class _Outputs:
    """Result files live in one private temp folder; folders older than OUTPUT_MAX_AGE_S are removed."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="hf-unlearnable-space-"))

    def new_dir(self) -> Path:
        now = time.time()
        for old in self.root.iterdir():
            try:
                if now - old.stat().st_mtime > OUTPUT_MAX_AGE_S:
                    shutil.rmtree(old, ignore_errors=True)
            except OSError:
                pass
        return Path(tempfile.mkdtemp(dir=self.root))


# ---------------------------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------------------------
def build_demo(catalogue: Catalogue, limits: Limits | None = None):
    import gradio as gr

    limits = limits or Limits()
    if not catalogue.choices:
        raise SystemExit("nothing to offer: no per-batch method and no class-wise noise bank; see: "
                         + "; ".join(catalogue.problems))
    outputs = _Outputs()
    keys = list(catalogue.choices)
    first = catalogue.choices[keys[0]]

    def on_choice(key: str):
        ch = catalogue.choices[key]
        names = ch.class_names or []
        label_update = gr.update(choices=names, value=(names[0] if names else None), visible=bool(names))
        if ch.fixed_epsilon is not None:
            eps_update = gr.update(value=ch.fixed_epsilon, interactive=False,
                                   info="fixed by the noise bank, which was crafted at this budget")
        elif ch.norm != "linf":
            eps_update = gr.update(interactive=False, info=f"not used: this method's budget is "
                                   f"{describe(ch.norm, ch.budget)}")
        else:
            eps_update = gr.update(interactive=True, info="the L∞ budget per pixel value, in /255 steps")
        return label_update, eps_update, f"**{key}**: {ch.description}"

    def run(image_path, key, label, epsilon, progress=gr.Progress()):
        if image_path is None:
            raise gr.Error("Upload an image first.")
        if key not in catalogue.choices:
            raise gr.Error(f"unknown method {key!r}; choose one of {keys}.")
        progress(0, desc="protecting")
        try:
            result = protect_upload(image_path, catalogue.choices[key], label, epsilon, outputs.new_dir(), limits)
        except ProtectionError as exc:
            raise gr.Error(str(exc)) from None
        except MemoryError:
            raise gr.Error("the server ran out of memory on this image; downscale it and try again.") from None
        return str(result.png_path), str(result.map_path), result.report, str(result.png_path)

    intro = (
        "# Protect a picture with hf_unlearnable\n"
        "Adds a small, bounded perturbation (at most ε per pixel value) chosen so that a model trained on the "
        "picture learns the noise instead of the content. Upload, pick a method, press **Protect**, download the "
        "**PNG** (JPEG or WebP would change the pixels). This is a demonstration: the protection is measured on "
        "datasets (see the library's README), and a single protected picture proves nothing on its own.")
    network_limit = ("" if limits.network_pixels >= limits.max_pixels
                     else f" ({_mp(limits.network_pixels)} for methods that run a network)")
    limits_text = (
        f"Limits: up to {_mp(limits.max_pixels)} per image{network_limit}. The whole picture is protected in one "
        f"call of the library, in its own size and mode (RGBA keeps its alpha, grey stays grey); methods that run a "
        f"network make their noise at the network's input size and the library resizes it to your picture. "
        f"Uploads and results are kept only in this server's temporary folders and removed after an hour.")
    if catalogue.problems:
        limits_text += "\n\nNot offered here: " + " · ".join(catalogue.problems)

    with gr.Blocks(title="hf_unlearnable: protect an image", delete_cache=(OUTPUT_MAX_AGE_S, OUTPUT_MAX_AGE_S)) as demo:
        gr.Markdown(intro)
        with gr.Row():
            with gr.Column():
                inp = gr.Image(label="Your image", type="filepath", image_mode=None, format="png",
                               sources=["upload"], height=320, elem_id="inp")
                method = gr.Dropdown(keys, value=keys[0], label="Method", elem_id="method")
                info = gr.Markdown(f"**{keys[0]}**: {first.description}", elem_id="method-info")
                label = gr.Dropdown(first.class_names or [], value=(first.class_names or [None])[0],
                                    label="Class of the picture", visible=first.class_names is not None,
                                    allow_custom_value=True,    # the API may name any choice's class; checked in run
                                    elem_id="label")
                eps = gr.Slider(EPS_MIN, EPS_MAX, value=first.fixed_epsilon or EPS_DEFAULT, step=1,
                                label="ε (/255)", interactive=first.fixed_epsilon is None and first.norm == "linf",
                                elem_id="eps")
                btn = gr.Button("Protect", variant="primary", elem_id="protect")
            with gr.Column():
                out_img = gr.Image(label="Protected image", format="png", interactive=False, height=320,
                                   elem_id="protected")
                out_map = gr.Image(label="Noise, amplified (grey = 0, black/white = ∓ε)", format="png",
                                   interactive=False, height=320, elem_id="noise")
                report = gr.Textbox(label="Report", lines=7, interactive=False, elem_id="report")
                dl = gr.File(label="Download the protected PNG", interactive=False, elem_id="dl")
        gr.Markdown(limits_text, elem_id="limits")
        method.change(on_choice, [method], [label, eps, info], api_visibility="private")
        btn.click(run, [inp, method, label, eps], [out_img, out_map, report, dl], api_name="protect")
    return demo


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=None,
                        help="port to serve on (default: $GRADIO_SERVER_PORT, else 7860 or the next free one)")
    parser.add_argument("--noise", action="append", default=[], metavar="PATH_OR_REPO",
                        help=f"a class-wise noise bank to offer (repeatable); also read from ${NOISE_ENV}")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS, help="largest image, in pixels")
    parser.add_argument("--max-network-pixels", type=int, default=None,
                        help="largest image for methods that run a network, in pixels (default: --max-pixels)")
    args = parser.parse_args(argv)
    specs = noise_specs_from_readme(Path(__file__).with_name("README.md"))
    specs += [s for s in noise_specs_from_env(os.environ.get(NOISE_ENV)) + list(args.noise) if s not in specs]
    catalogue = build_catalogue(specs)
    for problem in catalogue.problems:
        print(f"warning: {problem}", file=sys.stderr)
    demo = build_demo(catalogue, Limits(max_pixels=args.max_pixels, max_network_pixels=args.max_network_pixels))
    # Plain launch: Spaces sets GRADIO_SERVER_NAME=0.0.0.0 itself; locally Gradio binds 127.0.0.1.
    demo.queue(default_concurrency_limit=1).launch(server_port=args.port, show_error=True, max_file_size="100mb")


if __name__ == "__main__":
    main()
