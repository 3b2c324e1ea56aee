"""The one place densekit registers into OpenMMLab registries (mmdet and mmseg together)."""
from __future__ import annotations

import importlib

import mmengine  # noqa: F401  (ImportError here means the stack is absent)

# Each module below registers its own objects when imported.
_MODULES = (
    'densekit.mm.backbones',
    'densekit.mm.hooks',
    'densekit.mm.optim',
    'densekit.mm.tta',
    'densekit.mm.depth',
    'densekit.mm.datasets',
)

_DONE = False


def register_all() -> None:
    global _DONE
    if _DONE:
        return
    _DONE = True
    for name in _MODULES:
        importlib.import_module(name)
