"""Image encoders behind one interface: ``make_encoder(name, **options) -> Encoder``.

Backends register a builder with :func:`register_encoder`; names encode the variant
(``dinov2-vits14``, ``dinov2-vitb14-reg``, ``vae``, ``diffusion``, ``jepa``, ``transporter``).
"""
from __future__ import annotations

import difflib
import fnmatch
import importlib
from typing import Callable

from .base import Encoder, to_float_images

__all__ = ["Encoder", "make_encoder", "list_encoders", "register_encoder", "to_float_images",
           "encoder_status"]

_REGISTRY: dict[str, Callable[..., Encoder]] = {}
_BACKEND_MODULES = ("dinov2", "vae", "diffusion", "jepa", "transporter")  # imported lazily, in this order
_loaded = False


def register_encoder(name: str):
    """Decorator: record ``fn(**options) -> Encoder`` under ``name``."""
    def wrap(fn):
        if name in _REGISTRY:
            raise ValueError(f"encoder {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn
    return wrap


def _load_backends() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in _BACKEND_MODULES:
        try:
            importlib.import_module(f"{__name__}.{mod}")
        except ModuleNotFoundError as e:  # a backend file not present in this install
            if e.name != f"{__name__}.{mod}":
                raise


def list_encoders(pattern: str = "*") -> list[str]:
    """Registered encoder names matching a shell-style ``pattern``."""
    _load_backends()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def make_encoder(name: str, **options) -> Encoder:
    """Build an encoder by name.

    Args:
        name: a registered name (see :func:`list_encoders`).
        **options: backend options; ``None`` values are dropped so backend defaults hold.

    Raises:
        ValueError: unknown name (the message lists the known ones and the closest match).
    """
    _load_backends()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown encoder {name!r}.{hint} Known encoders: {', '.join(list_encoders())}")
    options = {k: v for k, v in options.items() if v is not None}
    return _REGISTRY[name](**options)


def encoder_status() -> list[dict]:
    """One row per backend for ``wmpc info``: name, whether weights are available and where.

    Backend modules may define ``weights_status() -> list[dict]`` with keys
    ``name``, ``available`` (bool), ``detail`` (str) and optionally ``status`` (a word shown
    instead of available / not, e.g. ``"trainable"``).
    """
    _load_backends()
    rows = []
    for mod in _BACKEND_MODULES:
        try:
            m = importlib.import_module(f"{__name__}.{mod}")
        except ModuleNotFoundError:
            continue
        fn = getattr(m, "weights_status", None)
        if fn is not None:
            rows.extend(fn())
    return rows
