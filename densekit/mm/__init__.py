"""densekit's OpenMMLab edge: the one place densekit meets mmengine, mmdet and mmseg.

Nothing below this package (``densekit.ops``, ``layers``, ``models``, ``datasets``,
``evaluation``, ``engine``, ``compat``) imports it. :func:`register_all` (called by
``import densekit`` when the stack is installed) registers every densekit class into the
OpenMMLab registries, each module through its own ``register()`` and :func:`densekit.mm.registry.
register` (the one shadow check); importing a module registers nothing by itself.

Modules, by role:

* :mod:`.backbones`: every backbone of ``densekit.models.list_backbones()``, in mmdet's and
  mmseg's ``MODELS``;
* :mod:`.datasets`: validated COCO / Cityscapes / ADE20K and the synthetic quickstart sets;
  :mod:`.validated`: the checks shared by the segmentation and depth datasets;
* :mod:`.depth`: the depth datasets, transforms, estimator, metric and visualisation (mmseg);
* :mod:`.heads`: dense heads and detectors (one module each) built on mmdet's / mmseg's;
* :mod:`.preprocessing`: data preprocessors (test-time fixed-size padding);
* :mod:`.hooks`, :mod:`.optim`, :mod:`.tta`: engine hooks, layer-decay optimizer constructor,
  instance-segmentation TTA;
* :mod:`.runner`: what ``tools/train.py`` and ``tools/test.py`` run.

Naming rule for registered classes: a class is registered under its Python class name, which
is its plain descriptive name (``LoadDepthMap``, ``RNGStateHook``, ``KITTIEigenDataset``) unless
OpenMMLab registers that name, compared without case, in a registry of the same kind; then it is
``DenseKit`` + that name (``DenseKitCocoDataset`` beside mmdet's ``CocoDataset``,
``DenseKitDepthEstimator`` beside mmseg's ``DepthEstimator``, ``DenseKitSILogLoss`` beside
mmseg's ``SiLogLoss``). A core class registered here (heads, losses) keeps its class name under
the same rule; backbones keep their ``densekit.models`` registry names. Former names are kept as
deprecated aliases that warn when built; ``docs/openmmlab.md`` lists them.
"""
from __future__ import annotations

import importlib

import mmengine  # noqa: F401  (ImportError here means the stack is absent)

_MODULES = (
    'densekit.mm.backbones',
    'densekit.mm.hooks',
    'densekit.mm.curves',
    'densekit.mm.visualization',
    'densekit.mm.optim',
    'densekit.mm.tta',
    'densekit.mm.depth',
    'densekit.mm.heads',
    'densekit.mm.preprocessing',
    'densekit.mm.datasets',
)

_DONE = False


def register_all() -> None:
    """Registers every densekit class into the OpenMMLab registries (once per process)."""
    global _DONE
    if _DONE:
        return
    _DONE = True
    for name in _MODULES:
        importlib.import_module(name).register()
