"""How the command line ends when something outside the library fails: one `error:` line naming what failed and
what to do (the OS, the network, the Hub), and Ctrl-C that stops worker pools without their tracebacks."""

from __future__ import annotations

import errno
import os
import signal
import sys
import traceback
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from ..errors import ProtectionError

_OS_ADVICE = {
    errno.ENOSPC: "the disk is full: free some space or write to another folder",
    errno.EDQUOT: "the disk quota is used up: free some space or write to another folder",
    errno.EACCES: "permission denied: choose a folder you can write to",
    errno.EPERM: "operation not permitted: choose a folder you can write to",
    errno.EROFS: "the file system is read-only: choose another folder",
}


def describe_failure(exc: BaseException) -> str:
    """One line for a failure that is not a ProtectionError (those carry their own message)."""
    hub = _hub_failure(exc)
    if hub is not None:
        return hub
    os_error = next((e for e in _chain(exc) if isinstance(e, OSError) and e.errno is not None), None)
    if os_error is not None:
        where = f" ({os_error.filename})" if os_error.filename else ""
        advice = _OS_ADVICE.get(os_error.errno, os_error.strerror or str(os_error))
        return f"{advice}{where}."
    text = " ".join(str(exc).split())
    if "No space left" in text or "Disk quota" in text:    # safetensors reports ENOSPC as its own error type
        return f"the disk is full: free some space or write to another folder ({type(exc).__name__}: {text})."
    return f"{type(exc).__name__}: {text} (run with -v for the traceback)."


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _hub_failure(exc: BaseException) -> str | None:
    """The Hub refused (401/403/404...) or could not be reached; never prints a token (messages name URLs only)."""
    for e in _chain(exc):
        name = type(e).__name__
        response = getattr(e, "response", None)
        status = getattr(response, "status_code", None)
        if status in (401, 403):
            return (f"the Hub refused the request ({status}): the token is missing, wrong or lacks write access; "
                    "pass --token or run `huggingface-cli login`.")
        if status is not None and name.endswith("HTTPError"):
            return f"the Hub answered {status}: {' '.join(str(e).split())[:300]}."
        if name in ("ConnectError", "ConnectTimeout", "ReadTimeout", "ConnectionError", "RemoteProtocolError",
                    "OfflineModeIsEnabled"):
            endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
            return f"cannot reach the Hub at {endpoint} ({name}): check the network (or HF_ENDPOINT) and try again."
    return None


@contextmanager
def interrupts() -> Iterator[Callable[[], bool]]:
    """Ctrl-C reaches the whole process group: this process stops (KeyboardInterrupt) and tears its worker pools
    down; forked workers (datasets.map(num_proc=N)) inherit a handler that ignores it, so they print nothing.
    Yields a function telling whether Ctrl-C was pressed (a pool may then fail with another error)."""
    main_pid, seen = os.getpid(), []

    def handler(signum, frame):
        if os.getpid() != main_pid:
            return
        seen.append(signum)
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGINT, handler)
    except ValueError:          # not the main thread (main() called from a thread): leave Ctrl-C alone
        yield lambda: False
        return
    try:
        yield lambda: bool(seen)
    finally:
        signal.signal(signal.SIGINT, old)


def run_command(func: Callable[[Any], int | None], args: Any, *, verbose: bool) -> int:
    """Run one command; every way it can end becomes the exit status (0 ok, 2 failed, 130 interrupted), and every
    failure one line on stderr: `error: <message>` (a traceback too only when verbose) or `interrupted`."""
    from ._common import command_line_hint

    with interrupts() as interrupted:
        try:
            return int(func(args) or 0)
        except ProtectionError as exc:
            return _stderr(f"error: {exc}{command_line_hint(str(exc))}", 2)
        except KeyboardInterrupt:
            return _stderr("interrupted", 130)
        except Exception as exc:    # the OS, the network, a worker pool: one line, never a traceback unless -v
            if interrupted():       # e.g. a worker pool's TimeoutError while Ctrl-C tears it down
                return _stderr("interrupted", 130)
            if verbose:
                traceback.print_exc()
            return _stderr(f"error: {describe_failure(exc)}", 2)


def _stderr(line: str, status: int) -> int:
    print(line, file=sys.stderr)
    return status
