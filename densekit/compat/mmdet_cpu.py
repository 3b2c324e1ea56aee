"""mmdet code paths that only run on CPU, made to behave as their GPU counterparts.

mmdet's ``FCNMaskHead._predict_by_feat_single`` pastes masks one box at a time on CPU, each with
``_do_paste_mask(..., skip_empty=True)``, which allocates the pixel rows / columns between the
box's rounded corners with ``torch.arange``. For a box with ``x2 < x1 - 1`` (or ``y``), which a
freshly initialised or early-training model predicts (QueryInst's iterative box refinement, for
instance), that range is inverted and ``torch.arange`` raises. On GPU, mmdet pastes over the whole
image (``skip_empty=False``) and such a box simply gives the mask that ``grid_sample`` reads at
those coordinates. :func:`paste_mask` takes the GPU's whole-image path for exactly the chunks
whose tight region is inverted, so CPU and GPU predictions agree; every other chunk keeps mmdet's
CPU path unchanged.

:func:`install` patches the module when it is imported (or at once if it already is), without
importing mmdet itself.
"""
from __future__ import annotations

import importlib.abc
import sys

_FCN_MASK_HEAD = 'mmdet.models.roi_heads.mask_heads.fcn_mask_head'


def _tight_region_inverted(boxes, img_h: int, img_w: int) -> bool:
    """mmdet's ``skip_empty`` bounds (``_do_paste_mask``) would give ``torch.arange`` an upper
    bound below its lower bound."""
    import torch
    x0 = torch.clamp(boxes[:, 0].min().floor() - 1, min=0)
    y0 = torch.clamp(boxes[:, 1].min().floor() - 1, min=0)
    x1 = torch.clamp(boxes[:, 2].max().ceil() + 1, max=img_w)
    y1 = torch.clamp(boxes[:, 3].max().ceil() + 1, max=img_h)
    return bool(x1.to(torch.int32) < x0.to(torch.int32)) or \
        bool(y1.to(torch.int32) < y0.to(torch.int32))


def _make_paste_mask(original):
    def paste_mask(masks, boxes, img_h, img_w, skip_empty=True):
        if skip_empty and len(boxes) and _tight_region_inverted(boxes, img_h, img_w):
            return original(masks, boxes, img_h, img_w, skip_empty=False)
        return original(masks, boxes, img_h, img_w, skip_empty=skip_empty)
    paste_mask.__doc__ = original.__doc__
    paste_mask.__wrapped__ = original
    paste_mask.__densekit__ = True
    return paste_mask


def _patch_fcn_mask_head(module) -> None:
    fn = getattr(module, '_do_paste_mask', None)
    if fn is not None and not getattr(fn, '__densekit__', False):
        module._do_paste_mask = _make_paste_mask(fn)


_PATCHES = {_FCN_MASK_HEAD: _patch_fcn_mask_head}


class _PatchingLoader(importlib.abc.Loader):
    """Runs the real loader, then the patch."""

    def __init__(self, loader, patch):
        self._loader = loader
        self._patch = patch

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        self._patch(module)

    def __getattr__(self, name):  # get_source, get_code, ... for inspect / tracebacks
        return getattr(self._loader, name)


class _PostImportPatcher(importlib.abc.MetaPathFinder):
    """Finds the patched modules through the other finders and wraps their loaders."""

    def find_spec(self, fullname, path=None, target=None):
        patch = _PATCHES.get(fullname)
        if patch is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, 'find_spec'):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _PatchingLoader(spec.loader, patch)
                return spec
        return None


def install() -> None:
    if not any(isinstance(f, _PostImportPatcher) for f in sys.meta_path):
        sys.meta_path.insert(0, _PostImportPatcher())
    for name, patch in _PATCHES.items():
        module = sys.modules.get(name)
        if module is not None:
            patch(module)
