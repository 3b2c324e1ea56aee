"""Checkpoint converters: official / timm state dicts -> densekit keys, one function per family.

Each family file defines a ``checkpoint_filter_fn`` and registers it with
:func:`register_converter` under its file name (the name :func:`densekit.engine.checkpoint.load_pretrained`
looks up); :func:`convert_checkpoint` dispatches, and ``tools/convert_checkpoint.py FAMILY SRC DST``
is its command line. Like :mod:`densekit.models.registry`, this module imports no family.
"""
from __future__ import annotations

from typing import Callable, Dict, Mapping

import torch

__all__ = ['register_converter', 'list_converters', 'unwrap_state_dict', 'strip_wrapper_prefix',
           'convert_checkpoint']

Converter = Callable[[Mapping[str, torch.Tensor]], Dict[str, torch.Tensor]]

_CONVERTERS: Dict[str, Converter] = {}


def register_converter(family: str, fn: Converter | None = None):
    """Register ``fn`` as the converter of ``family``: ``register_converter('nat', checkpoint_filter_fn)``
    or, as a decorator, ``@register_converter('nat')``."""

    def wrap(f):
        if family in _CONVERTERS and _CONVERTERS[family] is not f:
            raise KeyError(f"a converter for family '{family}' is already registered")
        _CONVERTERS[family] = f
        return f

    return wrap(fn) if fn is not None else wrap


def list_converters() -> list[str]:
    """Families with a registered converter."""
    return sorted(_CONVERTERS)


def unwrap_state_dict(ckpt: Mapping) -> Dict[str, torch.Tensor]:
    """Returns the tensor dict inside common checkpoint wrappers ('state_dict', 'model', 'module')."""
    for key in ('state_dict', 'model', 'module', 'model_state'):
        if isinstance(ckpt, Mapping) and key in ckpt and isinstance(ckpt[key], Mapping):
            return unwrap_state_dict(ckpt[key])
    return dict(ckpt)


def strip_wrapper_prefix(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Drops a DataParallel ``module.`` prefix and, for a detector / segmentor checkpoint (any
    ``backbone.*`` key), keeps only the ``backbone.*`` entries, without the prefix. Every
    family's ``checkpoint_filter_fn`` starts with it."""
    sd = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state_dict.items()}
    if any(k.startswith('backbone.') for k in sd):
        sd = {k[len('backbone.'):]: v for k, v in sd.items() if k.startswith('backbone.')}
    return sd


def convert_checkpoint(family: str, state_dict: Mapping) -> Dict[str, torch.Tensor]:
    """Convert an official or timm checkpoint of ``family`` to densekit's keys."""
    if family not in _CONVERTERS:
        raise KeyError(f"no converter for family '{family}'; known: {sorted(_CONVERTERS)}")
    return _CONVERTERS[family](unwrap_state_dict(state_dict))
