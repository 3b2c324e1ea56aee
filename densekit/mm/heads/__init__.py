"""Dense-prediction heads and detectors registered into mmdet / mmseg, one module per head.

Each module of this package defines its OpenMMLab classes (subclasses of mmdet's / mmseg's own
where the head builds on them) and a ``register()`` function; :func:`register` calls every
module's ``register()``. Parts of a head that need no OpenMMLab (attention variants, matching
costs, position-relation embeddings) live in the core, in :mod:`densekit.models.heads`.
"""
from __future__ import annotations

import importlib
import pkgutil


def _modules():
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith('_'):
            yield importlib.import_module(f'{__name__}.{info.name}')


def register() -> None:
    for module in _modules():
        module.register()
