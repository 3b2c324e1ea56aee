"""The one checkpoint loader for pretrained weights (backbones, ``init_cfg``, ``load_from``)."""
from __future__ import annotations

import logging
import os
from typing import Mapping

import torch.nn as nn

from densekit.compat.safe_load import safe_load
from densekit.models.convert import unwrap_state_dict

logger = logging.getLogger(__name__)


def load_state_dict_file(path: str | os.PathLike, map_location: str = 'cpu') -> dict:
    """Safely loads a checkpoint file or URL and returns its tensor dict (wrappers removed).

    A URL is downloaded once into the cache (:mod:`densekit.utils.download`)."""
    from densekit.utils.download import resolve_checkpoint
    path = resolve_checkpoint(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'pretrained checkpoint {path} does not exist')
    return unwrap_state_dict(safe_load(path, map_location=map_location))


def checkpoint_family(model: nn.Module) -> str | None:
    """The converter family of a densekit backbone: the name of its family file, if it has one."""
    from densekit.models.convert import list_converters
    module = type(model).__module__
    if not module.startswith('densekit.models.backbones.'):
        return None
    family = module.rsplit('.', 1)[-1]
    return family if family in list_converters() else None


def load_pretrained(model: nn.Module, path: str | os.PathLike, prefix: str | None = None,
                    strict: bool = False) -> tuple[list[str], list[str]]:
    """Loads ``path`` into ``model`` and logs missing / unexpected keys.

    For a densekit backbone family with a converter, the checkpoint goes through
    :func:`densekit.models.convert_checkpoint` first, so official and timm releases load as they
    are (converters pass densekit's own keys through unchanged).

    Args:
        model: the module to load into.
        path: checkpoint file (mmengine, timm or plain state dict) or its http(s) URL.
        prefix: keep only keys starting with ``prefix`` and strip it (e.g. ``'backbone.'`` to
            take a backbone out of a detector checkpoint).
        strict: raise if any key is missing or unexpected.

    Returns:
        ``(missing_keys, unexpected_keys)``.
    """
    sd: Mapping = load_state_dict_file(path)
    if prefix:
        p = prefix if prefix.endswith('.') else prefix + '.'
        sd = {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}
        if not sd:
            raise KeyError(f"checkpoint {path} has no keys with prefix '{p}'")
    family = checkpoint_family(model)
    if family is not None:
        from densekit.models.convert import convert_checkpoint
        sd = convert_checkpoint(family, sd)
    result = model.load_state_dict(sd, strict=strict)
    if result.missing_keys:
        logger.warning('%s: %d missing keys when loading %s: %s', type(model).__name__,
                       len(result.missing_keys), path, result.missing_keys[:10])
    if result.unexpected_keys:
        logger.warning('%s: %d unexpected keys when loading %s: %s', type(model).__name__,
                       len(result.unexpected_keys), path, result.unexpected_keys[:10])
    return list(result.missing_keys), list(result.unexpected_keys)
