"""Protection methods: one module each, registered by name in `_registry` (adding a method = one module + its
test file)."""

from __future__ import annotations

from ._registry import METHODS, get_method, register
from .base import Method, MethodConfig

# Registration happens on import of each module.
from . import random as _random  # noqa: E402,F401
from . import em as _em  # noqa: E402,F401
from . import pue as _pue  # noqa: E402,F401
from . import bayes as _bayes  # noqa: E402,F401
from . import ar as _ar  # noqa: E402,F401
from . import lsp as _lsp  # noqa: E402,F401
from . import ops as _ops  # noqa: E402,F401
from . import tap as _tap  # noqa: E402,F401
from . import rem as _rem  # noqa: E402,F401

__all__ = ["METHODS", "Method", "MethodConfig", "register", "get_method"]
