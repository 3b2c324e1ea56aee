"""Shared by the official-parity fixtures of the backbone families and their tests.

A fixture stores no weights: it stores a seed and a spec ``(key, shape, dtype, mean, std)`` per
entry of the official state dict, and :func:`regenerate_state_dict` redraws the same tensors both
when the fixture is made (``tools/dev/make_<family>_fixture.py``) and when the test loads it.

Also :func:`install_stand_ins`, which the fixture scripts use to replace an official repo's
imports (detectron2, CUDA extensions, old mmcv) with small modules of their own.
"""
import sys
import types

import torch


def regenerate_state_dict(spec: list, seed: int) -> dict:
    """The state dict described by ``spec``: floats drawn in spec order from one seeded generator
    (``mean + std * N(0, 1)``), integer buffers zero."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape, dtype, mean, std in spec:
        if dtype.startswith('float'):
            out[key] = mean + std * torch.randn(shape, generator=gen)
        else:
            out[key] = torch.zeros(shape, dtype=getattr(torch, dtype))
    return out


def install_stand_ins(modules: dict) -> None:
    """Register ``{module name: {attribute: value}}`` in ``sys.modules`` as importable packages,
    so that the official code's ``import`` / ``from ... import`` of them finds these attributes."""
    for name, attrs in modules.items():
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        mod.__path__ = []
        sys.modules[name] = mod
