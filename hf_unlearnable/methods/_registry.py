"""The method registry: name -> Method class. Below the methods: each method module registers itself here."""

from __future__ import annotations

from ..errors import ProtectionError
from .base import Method

METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator (or plain call) that adds a Method subclass to METHODS under `cls.name`."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no `name`")
    if cls.norm != cls.config_class.norm:
        raise ValueError(f"{cls.__name__}.norm {cls.norm!r} differs from its config's {cls.config_class.norm!r}")
    if cls.name in METHODS and METHODS[cls.name] is not cls:
        raise ValueError(f"a method named {cls.name!r} is already registered ({METHODS[cls.name].__name__})")
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type[Method]:
    if not isinstance(name, str) or name not in METHODS:
        raise ProtectionError(f"unknown method {name!r}; available: {sorted(METHODS)}.")
    return METHODS[name]
