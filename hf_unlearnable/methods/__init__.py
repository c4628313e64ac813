"""Method registry: name -> Method class. Adding a method = one module here + one `register` line."""

from __future__ import annotations

from ..errors import ProtectionError
from .base import Method, MethodConfig

METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator (or plain call) that adds a Method subclass to METHODS under `cls.name`."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no `name`")
    if cls.name in METHODS and METHODS[cls.name] is not cls:
        raise ValueError(f"a method named {cls.name!r} is already registered ({METHODS[cls.name].__name__})")
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type[Method]:
    if not isinstance(name, str) or name not in METHODS:
        raise ProtectionError(f"unknown method {name!r}; available: {sorted(METHODS)}.")
    return METHODS[name]


# Registration happens on import of each module.
from . import random as _random  # noqa: E402,F401
from . import em as _em  # noqa: E402,F401
from . import pue as _pue  # noqa: E402,F401
from . import bayes as _bayes  # noqa: E402,F401

__all__ = ["METHODS", "Method", "MethodConfig", "register", "get_method"]
