"""Registers every densekit backbone into mmdet's and mmseg's ``MODELS`` (one place for both).

In a config: ``backbone=dict(type='TimmBackbone', model_name='resnet18', ...)`` or, for a native
family, its registered name (``densekit.models.list_backbones()``). An mmengine-style
``init_cfg=dict(type='Pretrained', checkpoint=PATH)`` is honoured through densekit's safe loader.
"""
from __future__ import annotations

import functools

from densekit.models.registry import add_registration_listener  # importing it registers every family


def _with_init_cfg(builder):
    """Accept mmengine's ``init_cfg``; load a 'Pretrained' checkpoint in ``init_weights``."""

    @functools.wraps(builder)
    def build(init_cfg: dict | None = None, **kwargs):
        model = builder(**kwargs)
        if init_cfg is not None:
            if init_cfg.get('type') != 'Pretrained' or 'checkpoint' not in init_cfg:
                raise ValueError(f"backbone {builder.__name__}: only init_cfg=dict(type='Pretrained', "
                                 f"checkpoint=PATH[, prefix=...]) is supported, got {init_cfg!r}")
            model.init_cfg = dict(init_cfg)
            original = getattr(model, 'init_weights', None)

            def init_weights():
                if original is not None:
                    original()
                from densekit.engine.checkpoint import load_pretrained
                load_pretrained(model, init_cfg['checkpoint'], prefix=init_cfg.get('prefix'))

            model.init_weights = init_weights
        return model

    return build


def _register(registry, scope: str, name: str, builder) -> None:
    existing = registry.module_dict.get(name)
    if existing is not None:
        if getattr(existing, '__wrapped__', None) is builder:
            return
        raise KeyError(f"densekit backbone '{name}' would shadow {scope}'s {existing!r}")
    registry.register_module(name=name, module=_with_init_cfg(builder))


def register() -> None:
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmseg.registry import MODELS as MMSEG_MODELS

    def on_register(name, builder):
        _register(MMDET_MODELS, 'mmdet', name, builder)
        _register(MMSEG_MODELS, 'mmseg', name, builder)

    add_registration_listener(on_register)


register()
