"""Backbone registry of the core (no OpenMMLab dependency).

This module holds the name -> builder dict and imports no family. Each family file registers its
builders with :func:`register_backbone`; ``densekit/models/__init__.py`` imports
:mod:`densekit.models.backbones` (which imports every family), so any import of ``densekit.models``
or one of its modules finds every family registered. OpenMMLab registration of every entry
happens once, in :mod:`densekit.mm.backbones`, through :func:`add_registration_listener`.
"""
from __future__ import annotations

import difflib
import fnmatch
from typing import Callable, Dict, List

import torch.nn as nn

__all__ = ['register_backbone', 'add_registration_listener', 'list_backbones',
           'get_backbone_builder', 'build_backbone']

Builder = Callable[..., nn.Module]

_BACKBONES: Dict[str, Builder] = {}
# Called with (name, builder) for every registration, also those made after the listener was
# added (e.g. a user's backbone imported by ``custom_imports`` after ``import densekit``).
_LISTENERS: List[Callable[[str, Builder], None]] = []


def add_registration_listener(fn: Callable[[str, Builder], None]) -> None:
    """Calls ``fn(name, builder)`` for every backbone registered now and later."""
    _LISTENERS.append(fn)
    for name, builder in list(_BACKBONES.items()):
        fn(name, builder)


def register_backbone(fn: Builder | None = None, *, name: str | None = None):
    """Register a backbone builder (a class or a function returning an ``nn.Module``).

    Use as ``@register_backbone`` or ``@register_backbone(name='my_net_tiny')``; the name defaults
    to the builder's ``__name__``. Registering another builder under a taken name is an error.
    """

    def wrap(f):
        key = name or f.__name__
        if key in _BACKBONES and _BACKBONES[key] is not f:
            raise KeyError(f"backbone '{key}' is already registered by {_BACKBONES[key]!r}")
        _BACKBONES[key] = f
        for listener in _LISTENERS:
            listener(key, f)
        return f

    return wrap(fn) if fn is not None else wrap


def list_backbones(pattern: str | None = None) -> list[str]:
    """Names of all registered backbones (optionally filtered by an ``fnmatch`` pattern)."""
    return [n for n in sorted(_BACKBONES) if pattern is None or fnmatch.fnmatch(n, pattern)]


def get_backbone_builder(name: str) -> Builder:
    """The builder registered as ``name``."""
    if name not in _BACKBONES:
        close = difflib.get_close_matches(name, list(_BACKBONES), n=3)
        hint = f"; did you mean {close}?" if close else ''
        raise KeyError(f"unknown backbone '{name}'{hint} (see densekit.models.list_backbones())")
    return _BACKBONES[name]


def build_backbone(name: str, **kwargs) -> nn.Module:
    """Build a registered backbone by name, e.g. ``build_backbone('convnext_tiny', out_indices=(1, 2, 3))``."""
    return get_backbone_builder(name)(**kwargs)
