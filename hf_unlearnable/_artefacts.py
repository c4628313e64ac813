"""Saving and opening artefact folders (config.json + one safetensors file), shared by Noise and Surrogate.

Saving is atomic (`_atomic.atomic_dir`): everything is written into a temporary sibling folder that replaces the
target only when complete. Opening reads JSON and safetensors only and refuses folders that hold nothing but pickles.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ._atomic import atomic_dir, file_in_the_way, write_text_atomic  # noqa: F401 (re-exported)
from .errors import ProtectionError

CONFIG_NAME = "config.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def open_artefact(path: str | os.PathLike, weights_name: str, what: str) -> tuple[Path, dict]:
    """Check a local artefact folder and return it with its parsed config.json; pickles are never loaded."""
    folder = Path(path)
    if not folder.is_dir():
        raise ProtectionError(f"{what} {str(path)!r} is not a directory with {CONFIG_NAME} and {weights_name}.")
    if not (folder / weights_name).exists():
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        hint = (f" It holds pickle files {pickles}, which are never loaded (they can run code); ask the "
                "publisher for a safetensors export.") if pickles else ""
        raise ProtectionError(f"{what} {str(path)!r} has no {weights_name}.{hint}")
    try:
        config = json.loads((folder / CONFIG_NAME).read_text())
    except FileNotFoundError:
        raise ProtectionError(f"{what} {str(path)!r} has no {CONFIG_NAME}.") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtectionError(f"{what} {str(path)!r}: its {CONFIG_NAME} is not valid JSON ({exc}); the folder is "
                              "damaged: save or download it again.") from None
    if not isinstance(config, dict):
        raise ProtectionError(f"{what} {str(path)!r}: its {CONFIG_NAME} is not a JSON object; the folder is damaged: "
                              "save or download it again.")
    return folder, config


def config_from_dict(config_class, data: dict, what: str):
    """A typed artefact config from its config.json (unknown keys ignored: newer versions may add fields), or a
    ProtectionError when a field is missing or of the wrong type."""
    known = set(config_class.__dataclass_fields__)
    try:
        return config_class(**{k: v for k, v in data.items() if k in known})
    except (TypeError, ValueError) as exc:
        raise ProtectionError(f"{what}: its {CONFIG_NAME} is damaged ({exc}); save or download it again.") from None


def read_safetensors(path: Path, what: str, required: tuple[str, ...], framework: str = "numpy") -> dict:
    """The tensors of a safetensors file, or a ProtectionError naming the file when it is damaged or lacks one of
    `required`."""
    try:
        if framework == "numpy":
            from safetensors.numpy import load_file
        else:
            from safetensors.torch import load_file
        tensors = load_file(str(path))
    except Exception as exc:   # safetensors raises its own error type (and OSError, ValueError) for damaged files
        raise ProtectionError(f"{what}: {path.name} cannot be read ({type(exc).__name__}: {exc}); the file is "
                              "damaged: save or download it again.") from None
    missing = [k for k in required if k not in tensors]
    if missing:
        raise ProtectionError(f"{what}: {path.name} has no tensor(s) {missing}; it was not written by this library "
                              "or is damaged.")
    return tensors


# -- the Hub ---------------------------------------------------------------------------------------------------------
# Noise and Surrogate mirror huggingface_hub's ModelHubMixin API (save_pretrained / from_pretrained / push_to_hub,
# the same argument names) without inheriting it: the mixin builds config.json from __init__ arguments (ours are
# int8 tensors and typed configs), its save is not atomic, PyTorchModelHubMixin falls back to unpickling
# pytorch_model.bin when no safetensors file exists, and our cards come from model_cards/ templates.


def is_local(spec: str | os.PathLike) -> bool:
    return Path(spec).expanduser().is_dir()


def _hub_errors():
    from huggingface_hub import errors

    return errors


def fetch_artefact(spec: str | os.PathLike, weights_name: str, what: str, *, revision: str | None = None,
                   token: str | bool | None = None, cache_dir: str | os.PathLike | None = None,
                   force_download: bool = False, local_files_only: bool = False) -> tuple[Path, dict]:
    """A local folder, or a model repo on the Hub: (folder holding config.json + weights, parsed config.json).

    From the Hub only config.json and the safetensors file are downloaded, so pickle files that sit in the repo
    are never fetched, let alone loaded; a repo with pickles but no safetensors is refused, naming the files.
    """
    if is_local(spec):
        if revision is not None:
            raise ProtectionError(f"revision={revision!r} applies to Hub repos, but {what} {str(spec)!r} is a local "
                                  "folder; drop revision= or pass a repo id.")
        return open_artefact(Path(spec).expanduser(), weights_name, what)
    spec = str(spec)
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(spec)
    except HFValidationError:
        raise ProtectionError(f"{what} {spec!r} is not a directory (with {CONFIG_NAME} and {weights_name}) "
                              "and not a Hub repo id ('user/name').") from None
    return _fetch_from_hub(spec, weights_name, what, revision, token, cache_dir, force_download, local_files_only)


def _fetch_from_hub(spec: str, weights_name: str, what: str, revision, token, cache_dir, force_download,
                    local_files_only) -> tuple[Path, dict]:
    from huggingface_hub import hf_hub_download

    err = _hub_errors()
    kw = dict(repo_id=spec, revision=revision, token=token, cache_dir=cache_dir, force_download=force_download,
              local_files_only=local_files_only)

    def download(filename: str) -> str:
        try:
            return hf_hub_download(filename=filename, **kw)
        except ValueError as exc:
            # with force_download=True, huggingface_hub wraps Hub errors in a "Force download failed" ValueError
            if isinstance(exc.__cause__, err.HfHubHTTPError):
                raise exc.__cause__ from None
            raise

    try:
        config_path = download(CONFIG_NAME)
        try:
            download(weights_name)
        except err.LocalEntryNotFoundError:   # a subclass of EntryNotFoundError: offline, not a missing file
            raise
        except err.EntryNotFoundError:
            files = _repo_files(spec, revision, token)
            pickles = sorted(f for f in files if f.endswith(PICKLE_SUFFIXES))
            hint = (f" It holds pickle files {pickles}, which are never loaded (they can run code); ask the "
                    "publisher for a safetensors export.") if pickles else ""
            raise ProtectionError(f"{what} repo {spec!r} (revision {revision or 'main'}) has no {weights_name}."
                                  f"{hint}") from None
    except err.RepositoryNotFoundError:
        raise ProtectionError(f"{what} {spec!r} is not a directory here, and the Hub has no repo {spec!r} you can "
                              "read (check the id; for a private repo pass token=).") from None
    except err.RevisionNotFoundError:
        raise ProtectionError(f"{what} repo {spec!r} has no revision {revision!r} (a branch, tag or commit sha).") from None
    except err.LocalEntryNotFoundError:   # before EntryNotFoundError, its parent class
        raise ProtectionError(f"{what} {spec!r} is not a local folder, not in the local Hub cache, and the Hub cannot "
                              "be reached (offline?): check the path, or download the repo once online.") from None
    except err.EntryNotFoundError:
        raise ProtectionError(f"{what} repo {spec!r} (revision {revision or 'main'}) has no {CONFIG_NAME}: it is "
                              "not an hf_unlearnable artefact.") from None
    return open_artefact(Path(config_path).parent, weights_name, f"{what} repo {spec!r}")


def _repo_files(repo_id: str, revision: str | None, token) -> list[str]:
    from huggingface_hub import HfApi

    try:
        return HfApi(token=token).list_repo_files(repo_id, revision=revision)
    except Exception:  # the listing only improves an error message
        return []


def push_artefact(save: "callable", card: str, repo_id: str, *, what: str, commit_message: str | None = None,
                  private: bool | None = None, token: str | bool | None = None, branch: str | None = None,
                  create_pr: bool = False, overwrite_card: bool = False):
    """Create the repo if needed, save the artefact into a temporary folder and upload it as one commit.

    The card (README.md) is uploaded only when the repo has none, or with overwrite_card=True: text the owner
    wrote on the Hub is never replaced silently. Returns huggingface_hub's CommitInfo.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    if branch not in (None, "main"):
        api.create_branch(repo_id, branch=branch, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hf_unlearnable-push-") as tmp:
        folder = Path(tmp) / "artefact"
        save(folder)
        if overwrite_card or not api.file_exists(repo_id, "README.md", revision=branch):
            (folder / "README.md").write_text(card)
        return api.upload_folder(repo_id=repo_id, folder_path=folder, revision=branch, create_pr=create_pr,
                                 commit_message=commit_message or f"Upload {what} with hf_unlearnable")


# -- cards -------------------------------------------------------------------------------------------------------
def _template_dirs() -> list[Path]:
    import sys

    # A source checkout or editable install: model_cards/ beside the package; a wheel: installed as data files.
    return [Path(__file__).resolve().parents[1] / "model_cards",
            Path(sys.prefix) / "share" / "hf_unlearnable" / "model_cards"]


def render_card(template: str, front_matter: dict, **context) -> str:
    """Fill model_cards/<template> (Jinja2, undefined names are errors) with YAML front matter and context."""
    import jinja2
    import yaml

    for folder in _template_dirs():
        if (folder / template).exists():
            break
    else:
        raise ProtectionError(f"card template {template!r} not found in {[str(d) for d in _template_dirs()]}; "
                              "reinstall hf_unlearnable.")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(folder)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, autoescape=False)
    fm = yaml.safe_dump({k: v for k, v in front_matter.items() if v not in (None, [], {})}, sort_keys=False,
                        allow_unicode=True, width=1000).strip()
    return env.get_template(template).render(front_matter=fm, **context)
