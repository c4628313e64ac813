"""Writing folders and files whole or not at all, safely beside other writers and after a killed one.

A temporary sibling is written and then put in place in one step: readers find the old version or the complete new
one. Temporary folders carry their writer's pid, so the next run removes those of a writer that was killed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()   # read once, at import (os.umask can only be read by setting it)


@contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces `target` whole, on failure it is removed.

    A reader sees the old folder or the complete new one, never a half-written one (on Linux never a missing one
    either: see `_install`); on failure, parent folders this call created are removed again (only if still empty).
    Temporary folders left by a killed earlier writer are removed first.
    """
    target = Path(target)
    parent = target.parent
    created = [p for p in reversed([parent, *parent.parents]) if not p.exists()]
    parent.mkdir(parents=True, exist_ok=True)
    for kind in ("tmp", "old", "map"):
        remove_stale(parent, f".{target.name}.{kind}-")
    tmp = scratch_dir(parent, f".{target.name}.tmp-")
    try:
        yield tmp
        # mkdtemp makes 0700 and some writers (safetensors) 0600 files: give them what a plain write would get
        os.chmod(tmp, 0o777 & ~_UMASK)
        for path in tmp.rglob("*"):
            if path.is_file() and not path.is_symlink():
                os.chmod(path, 0o666 & ~_UMASK)
        _install(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for p in reversed(created):  # deepest first
            try:
                p.rmdir()
            except OSError:
                pass
        raise


_RENAME_EXCHANGE = 2      # linux/fs.h
_AT_FDCWD = -100


def _renameat2():
    """libc's renameat2, or None where there is none (not Linux, glibc before 2.28, musl builds without it)."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn


_RENAMEAT2 = _renameat2()


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing folders in one step (renameat2 RENAME_EXCHANGE); False where the kernel, libc or file
    system cannot, so the caller falls back to two renames."""
    import ctypes
    import errno

    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def scratch_dir(parent: Path, prefix: str) -> Path:
    """A fresh hidden folder `<prefix><pid>-<random>` in `parent`. The pid lets a later run tell a folder left by a
    killed process (removed by `remove_stale`) from one another writer is using right now."""
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))


def remove_stale(parent: Path, prefix: str) -> None:
    """Remove the `scratch_dir`s under `parent` whose process has died (kill -9, power loss)."""
    try:
        names = [n for n in os.listdir(parent) if n.startswith(prefix)]
    except OSError:
        return
    for name in names:
        pid = name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(parent / name, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True   # someone else's process (or a name we cannot judge): leave it
    return True


def _put_back(old: Path, target: Path) -> None:
    """After a failed rename, the old folder back at `target` (unless another writer's newer one is there now)."""
    try:
        os.replace(old / "x", target)
        old.rmdir()
    except OSError:
        shutil.rmtree(old, ignore_errors=True)


def _install(tmp: Path, target: Path) -> None:
    """Put the complete folder `tmp` at `target`, replacing what is there; concurrent writers each land whole.

    Linux: one renameat2(RENAME_EXCHANGE), so a reader always finds `target`. Elsewhere two renames (the old folder
    aside, the new one in), with a moment in between when `target` is missing. A race with another writer (the
    target appearing or vanishing between the check and the rename) is retried, never reported."""
    import errno

    for _ in range(1000):
        if not os.path.lexists(target):
            try:
                os.rename(tmp, target)
                return
            except OSError as exc:      # another writer put its folder there first: swap with it instead
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                continue
        try:
            if _exchange(tmp, target):
                shutil.rmtree(tmp, ignore_errors=True)   # now the old folder
                return
        except FileNotFoundError:       # a two-rename writer had the target aside at that moment
            continue
        old = scratch_dir(target.parent, f".{target.name}.old-")
        try:
            os.replace(target, old / "x")
        except FileNotFoundError:
            old.rmdir()
            continue
        try:
            os.replace(tmp, target)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):   # another writer landed in the gap: try again
                shutil.rmtree(old, ignore_errors=True)
                continue
            _put_back(old, target)
            raise
        except BaseException:
            _put_back(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return
    raise OSError(f"could not replace {str(target)!r}: other writers kept replacing it")


def file_in_the_way(path: Path, include_self: bool = False) -> Path | None:
    """The first of `path`'s parents (and `path` itself with `include_self`) that exists and is not a folder: what
    stops a folder from being made there."""
    candidates = (path, *path.parents) if include_self else path.parents
    return next((p for p in candidates if p.exists() and not p.is_dir()), None)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a text file whole or not at all (a temporary sibling, then one rename); ends it with a newline."""
    target = Path(os.path.expanduser(str(path)))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text if text.endswith("\n") else text + "\n")
        os.chmod(tmp, 0o666 & ~_UMASK)   # mkstemp makes 0600; a plain write would respect the umask
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def check_writable(path: str | os.PathLike, name: str) -> Path:
    """Refuse, before any work, a folder path that cannot be created or written: empty, under a file, on a
    read-only or full file system, or without permission. Nothing is left behind by the check."""
    from .errors import ProtectionError

    named = f"{name} {str(path)!r}" if name.startswith("--") else f"{name}={str(path)!r}"
    if not str(path).strip():
        raise ProtectionError(f"{named} is empty; pass a folder path.")
    target = Path(os.path.expanduser(str(path)))
    blocking = file_in_the_way(target, include_self=True)
    if blocking is not None:
        raise ProtectionError(f"{named}: {str(blocking)!r} is a file, not a folder; choose another path.")
    probe_in = next((p for p in (target, *target.parents) if p.is_dir()), Path.cwd())
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".write-check-", dir=probe_in))
    except OSError as exc:
        raise ProtectionError(f"{named}: cannot write in {str(probe_in)!r} ({exc.strerror}); choose another "
                              "folder.") from None
    return target
