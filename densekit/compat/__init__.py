"""Compatibility layer that lets the frozen OpenMMLab stack run on current PyTorch.

``install()`` is idempotent and is called by ``import densekit``. It

* provides ``mmcv._ext`` from :mod:`densekit.compat.mmcv_ext` when no compiled mmcv extension is
  installed (a full mmcv build is found first by the normal import machinery and never shadowed);
* makes mmengine's checkpoint loading safe on torch >= 2.6 and its checkpoint writes atomic
  (see :mod:`densekit.compat.safe_load`);
* lets mmengine's distributed launcher and DDP wrapper run on CPU with gloo
  (see :mod:`densekit.compat.dist`);
* provides ``panopticapi`` (COCO panoptic PQ, for mmdet's ``CocoPanopticMetric``) from
  :mod:`densekit.compat.panopticapi` when no real ``panopticapi`` is installed, in the same
  last-resort way as ``mmcv._ext``;
* makes mmdet's CPU-only mask pasting behave as its GPU path for inverted boxes
  (see :mod:`densekit.compat.mmdet_cpu`).
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys

_INSTALLED = False


class _PortableExtFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves ``mmcv._ext`` to densekit's portable ops, consulted after the standard finders.

    Appended at the *end* of ``sys.meta_path``: a compiled ``mmcv/_ext*.so`` is found by the
    default path finder first, so a full mmcv keeps its own ops.
    """

    fullname = 'mmcv._ext'

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.fullname:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, origin='densekit.compat.mmcv_ext')

    def create_module(self, spec):
        from densekit.compat import mmcv_ext
        return mmcv_ext

    def exec_module(self, module):
        return None


class _PanopticApiFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves ``panopticapi`` to :mod:`densekit.compat.panopticapi`, after the standard finders.

    The package's submodules are registered while the package is created: the shim's own
    ``__path__`` would otherwise let the path finder load second copies of them.
    """

    _SUBMODULES = ('evaluation', 'utils')

    def find_spec(self, fullname, path=None, target=None):
        if fullname != 'panopticapi':
            return None
        return importlib.machinery.ModuleSpec(fullname, self, origin='densekit.compat.panopticapi',
                                              is_package=True)

    def create_module(self, spec):
        from densekit.compat import panopticapi
        for name in self._SUBMODULES:
            sys.modules.setdefault(f'panopticapi.{name}', getattr(panopticapi, name))
        return panopticapi

    def exec_module(self, module):
        return None


def using_portable_ops() -> bool:
    """True when ``mmcv._ext`` resolves (or would resolve) to densekit's portable ops."""
    mod = sys.modules.get('mmcv._ext')
    if mod is not None:
        return mod is sys.modules.get('densekit.compat.mmcv_ext')
    spec = importlib.util.find_spec('mmcv._ext')
    return spec is not None and spec.origin == 'densekit.compat.mmcv_ext'


def install() -> None:
    global _INSTALLED
    if _INSTALLED:
        return
    if not any(isinstance(f, _PortableExtFinder) for f in sys.meta_path):
        sys.meta_path.append(_PortableExtFinder())
    if not any(isinstance(f, _PanopticApiFinder) for f in sys.meta_path):
        sys.meta_path.append(_PanopticApiFinder())
    from densekit.compat import dist, mmdet_cpu, pycocotools_np2, safe_load
    mmdet_cpu.install()
    safe_load.install()
    dist.install()
    pycocotools_np2.install()
    _INSTALLED = True
