"""Public inference API: ``init_model(config, checkpoint=None, device='cpu')`` and
``inference(model, images)``, for detection, instance / semantic / panoptic segmentation and
depth. Implemented in :mod:`densekit.mm.inference` (the OpenMMLab edge), imported on first use so
that ``import densekit.apis`` stays cheap.
"""
from __future__ import annotations

__all__ = ['init_model', 'inference', 'list_images']


def __getattr__(name: str):
    if name in __all__:
        from densekit.mm import inference as _impl
        return getattr(_impl, name)
    raise AttributeError(f"module 'densekit.apis' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
