"""Whether this package shows progress bars."""

from __future__ import annotations


def progress_bars() -> bool:
    """Whether to show this package's progress bars: they follow `datasets`' switch
    (datasets.disable_progress_bars(), which the command line's -q flips), so one call silences every bar."""
    try:
        from datasets.utils.logging import is_progress_bar_enabled
    except ImportError:     # pragma: no cover
        return True
    return bool(is_progress_bar_enabled())
