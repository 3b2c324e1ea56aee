"""Registers every densekit backbone into mmdet's and mmseg's ``MODELS`` (one place for both).

In a config: ``backbone=dict(type='TimmBackbone', model_name='resnet18', ...)`` or, for a native
family, its registered name (``densekit.models.list_backbones()``). An mmengine-style
``init_cfg=dict(type='Pretrained', checkpoint=PATH)`` is honoured through densekit's safe loader.
"""
from __future__ import annotations

import functools

from densekit.engine.checkpoint import load_pretrained
from densekit.mm.registry import register as _register
from densekit.models.registry import add_registration_listener  # importing densekit.models registers every family


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
                load_pretrained(model, init_cfg['checkpoint'], prefix=init_cfg.get('prefix'))

            model.init_weights = init_weights
        return model

    return build


def register() -> None:
    """Registers every backbone builder now and later (a listener of the core registry), with
    its core registry name, into mmdet's and mmseg's ``MODELS``."""
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmseg.registry import MODELS as MMSEG_MODELS

    def on_register(name, builder):
        build = _with_init_cfg(builder)
        _register(MMDET_MODELS, build, name)
        _register(MMSEG_MODELS, build, name)

    add_registration_listener(on_register)
