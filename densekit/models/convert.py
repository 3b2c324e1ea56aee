"""Checkpoint converters: official / timm state dicts -> densekit keys, one function per family.

Families register with :func:`register_converter`; :func:`convert_checkpoint` dispatches, and
``tools/convert_checkpoint.py FAMILY SRC DST`` is its command line.
"""
from __future__ import annotations

from typing import Callable, Dict, Mapping

import torch

_CONVERTERS: Dict[str, Callable[[Mapping[str, torch.Tensor]], Dict[str, torch.Tensor]]] = {}


def register_converter(family: str):
    def wrap(fn):
        if family in _CONVERTERS:
            raise KeyError(f"a converter for family '{family}' is already registered")
        _CONVERTERS[family] = fn
        return fn
    return wrap


def list_converters() -> list[str]:
    from densekit.models.registry import _import_families
    _import_families()
    return sorted(_CONVERTERS)


def unwrap_state_dict(ckpt: Mapping) -> Dict[str, torch.Tensor]:
    """Returns the tensor dict inside common checkpoint wrappers ('state_dict', 'model', 'module')."""
    for key in ('state_dict', 'model', 'module', 'model_state'):
        if isinstance(ckpt, Mapping) and key in ckpt and isinstance(ckpt[key], Mapping):
            return unwrap_state_dict(ckpt[key])
    return dict(ckpt)


def convert_checkpoint(family: str, state_dict: Mapping) -> Dict[str, torch.Tensor]:
    """Convert an official or timm checkpoint of ``family`` to densekit's keys."""
    from densekit.models.registry import _import_families
    _import_families()
    if family not in _CONVERTERS:
        raise KeyError(f"no converter for family '{family}'; known: {sorted(_CONVERTERS)}")
    return _CONVERTERS[family](unwrap_state_dict(state_dict))
