"""Deploy the Space: one commit to a Space repo with this folder and the hf_unlearnable package beside app.py.

    python hub_scripts/space/deploy.py you/hf-unlearnable                       # create (or update) the Space
    python hub_scripts/space/deploy.py you/hf-unlearnable --noise you/em-cifar10-classwise

The package is not on PyPI yet, so the library's source (its .py files and the bundled default surrogate, not the
CIFAR-10 slice, which the app does not read) is uploaded as `hf_unlearnable/` at the Space's root, where app.py
imports it; requirements.txt installs its dependencies. `--noise` writes the noise bank repos into the uploaded
card's `models:` (the page offers exactly those; the Hub links the Space to them) and `preload_from_hub` (the
Space caches them at build time). The token is huggingface_hub's usual one (HF_TOKEN or `hf auth login`); it is
never printed or written anywhere.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

SPACE_DIR = Path(__file__).resolve().parent
SPACE_FILES = ("app.py", "space_catalogue.py", "space_protection.py", "requirements.txt", "screenshot.png")
NOISE_FILES = "config.json,noise.safetensors"   # what preload_from_hub caches: never a pickle


def package_files(package_dir: Path) -> list[Path]:
    """The library files the Space needs: every module, and the bundled default surrogate (config + safetensors)."""
    files = [p for p in sorted(package_dir.rglob("*.py")) if "__pycache__" not in p.parts]
    files += sorted((package_dir / "surrogates" / "default").glob("*.json"))
    files += sorted((package_dir / "surrogates" / "default").glob("*.safetensors"))
    return files


def space_card(noise: Sequence[str] = ()) -> str:
    """README.md with the noise bank repos in `models:` and `preload_from_hub`; unchanged without any."""
    from huggingface_hub import SpaceCard

    card = SpaceCard.load(SPACE_DIR / "README.md")
    if noise:
        card.data.models = list(noise)
        card.data.preload_from_hub = [f"{repo} {NOISE_FILES}" for repo in noise]
    return str(card)


def deploy(space_id: str, *, noise: Sequence[str] = (), private: bool = False, token: str | bool | None = None,
           endpoint: str | None = None, package_dir: Path | None = None) -> str:
    """Create the Space if needed and upload it in one commit; returns the commit URL."""
    from huggingface_hub import CommitOperationAdd, HfApi

    import hf_unlearnable

    package_dir = Path(package_dir or Path(hf_unlearnable.__file__).parent)
    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    ops = [CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=space_card(noise).encode("utf-8"))]
    ops += [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(SPACE_DIR / name))
            for name in SPACE_FILES if (SPACE_DIR / name).exists()]
    ops += [CommitOperationAdd(path_in_repo=f"hf_unlearnable/{p.relative_to(package_dir).as_posix()}",
                               path_or_fileobj=str(p)) for p in package_files(package_dir)]
    info = api.create_commit(space_id, repo_type="space", operations=ops,
                             commit_message=f"Deploy the hf_unlearnable Space (library {hf_unlearnable.__version__})")
    return info.commit_url


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("space_id", help="the Space repo, e.g. you/hf-unlearnable")
    parser.add_argument("--noise", action="append", default=[], metavar="REPO",
                        help="a class-wise noise bank repo for the page (repeatable)")
    parser.add_argument("--private", action="store_true", help="create the Space private")
    parser.add_argument("--endpoint", default=None, help="Hub endpoint (default: HF_ENDPOINT or huggingface.co)")
    args = parser.parse_args(argv)
    url = deploy(args.space_id, noise=args.noise, private=args.private, endpoint=args.endpoint)
    print(f"deployed: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
