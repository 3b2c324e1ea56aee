"""Backbone registry of the core (no OpenMMLab dependency).

A backbone family registers its builders with :func:`register_backbone`; OpenMMLab
registration of every entry happens once, in :mod:`densekit.mm.backbones`.
"""
from __future__ import annotations

import difflib
from typing import Callable, Dict, List

import torch.nn as nn

_BACKBONES: Dict[str, Callable[..., nn.Module]] = {}
# Called with (name, builder) for every registration, also those made after the listener was
# added (e.g. a user's backbone imported by ``custom_imports`` after ``import densekit``).
_LISTENERS: List[Callable[[str, Callable[..., nn.Module]], None]] = []


def add_registration_listener(fn: Callable[[str, Callable[..., nn.Module]], None]) -> None:
    """Calls ``fn(name, builder)`` for every backbone registered now and later."""
    _LISTENERS.append(fn)
    for name, builder in list(_BACKBONES.items()):
        fn(name, builder)


def register_backbone(fn: Callable[..., nn.Module] = None, *, name: str | None = None):
    """Register a backbone builder (a class or a function returning an ``nn.Module``)."""

    def wrap(f):
        key = name or f.__name__
        if key in _BACKBONES and _BACKBONES[key] is not f:
            raise KeyError(f"backbone '{key}' is already registered by {_BACKBONES[key]!r}")
        _BACKBONES[key] = f
        for listener in _LISTENERS:
            listener(key, f)
        return f

    return wrap(fn) if fn is not None else wrap


def _import_families() -> None:
    # Importing the families registers them; kept lazy so `import densekit.models` stays cheap.
    from densekit.models import backbones  # noqa: F401


def list_backbones(pattern: str | None = None) -> list[str]:
    """Names of all registered backbones (optionally filtered by an ``fnmatch`` pattern)."""
    import fnmatch
    _import_families()
    names = sorted(_BACKBONES)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def get_backbone_builder(name: str) -> Callable[..., nn.Module]:
    _import_families()
    if name not in _BACKBONES:
        close = difflib.get_close_matches(name, list(_BACKBONES), n=3)
        hint = f"; did you mean {close}?" if close else ''
        raise KeyError(f"unknown backbone '{name}'{hint} (see densekit.models.list_backbones())")
    return _BACKBONES[name]


def build_backbone(name: str, **kwargs) -> nn.Module:
    """Build a registered backbone by name, e.g. ``build_backbone('convnext_tiny', out_indices=(1, 2, 3))``."""
    return get_backbone_builder(name)(**kwargs)
