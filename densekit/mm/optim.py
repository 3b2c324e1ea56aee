"""Layer-wise learning-rate decay for densekit backbones (registered into mmdet and mmseg).

ConvNeXt (Liu et al., "A ConvNet for the 2020s", CVPR 2022) fine-tunes its detection and
segmentation models with a learning rate that shrinks geometrically from the head towards the
stem, following BEiT (Bao et al., ICLR 2022). OpenMMLab's ``LearningRateDecayOptimizerConstructor``
finds layers by the parameter names of *its own* ConvNeXt (``backbone.downsample_layers.*``) and
refuses every other backbone class; this constructor finds them from the stage / block structure
that every densekit family (and timm's ``features_only`` models) shares, and composes with the
stock options of mmengine's ``DefaultOptimWrapperConstructor`` (``custom_keys``,
``norm_decay_mult``, ``bias_decay_mult``, ``flat_decay_mult`` ...), which are applied first.

Extra ``paramwise_cfg`` keys (all optional):

* ``decay_rate`` (float) and ``num_layers`` (int): enable the decay. With ``N = num_layers``,
  backbone parameters get a layer id in ``0 .. N + 1`` and their lr is multiplied by
  ``decay_rate ** (N + 1 - id)``; everything outside the backbone has id ``N + 1`` (scale 1).
* ``decay_type``: ``'layer_wise'`` (default) or ``'stage_wise'``.

  - ``layer_wise`` (4-stage hierarchy): stem -> 0, stage 0 -> 1, stage 1 -> 2, the blocks of
    stage 2 in ``N - 3`` equal groups -> 3 .. N - 1, stage 3 -> N. For ConvNeXt-T (9 blocks in
    stage 2, ``num_layers=6``) and -S/B/L/XL (27 blocks, ``num_layers=12``) this is exactly the
    official grouping of three blocks per id.
  - ``stage_wise``: stem -> 0, stage ``i`` -> ``i + 1``. The official code puts *every*
    downsampling layer at id 0; densekit keeps a stage's downsampling layer with its stage (the
    layer belongs to the stage it feeds; the difference is a handful of parameters).

  Parameters of the backbone that sit after the last stage (output norms) get ``N + 1``.
* ``backbone_lr_mult`` (float): multiplies the lr of every backbone parameter, on top of the
  above. Unlike ``custom_keys={'backbone': ...}`` it does not switch off the norm / bias /
  flat decay rules for the backbone (mmengine applies those only to parameters that match no
  custom key), which is what the Mask2Former and DETR recipes mean by "backbone lr x0.1, no
  weight decay on norms".
"""
from __future__ import annotations

import math
import re

import torch.nn as nn
from mmengine.optim import DefaultOptimWrapperConstructor

from densekit.mm.registry import register as _register

# `stages.2.blocks.5.` (densekit), `stages_2.blocks.5.` (timm features_only), `layers.2.` etc.
_STAGE_RE = re.compile(r'(?:^|\.)(?:stages|layers|levels)[._](\d+)\.')
_BLOCK_RE = re.compile(r'(?:^|\.)blocks\.(\d+)\.')
_DECAY_TYPES = ('layer_wise', 'stage_wise')


def _stage_and_block(name: str) -> tuple[int | None, int | None]:
    """(stage, block) indices of a backbone parameter name; ``None`` where absent."""
    m = _STAGE_RE.search(name)
    if m is None:
        return None, None
    b = _BLOCK_RE.search(name[m.end() - 1:])
    return int(m.group(1)), (int(b.group(1)) if b else None)


def backbone_layer_ids(backbone: nn.Module, num_layers: int,
                       decay_type: str = 'layer_wise') -> dict[str, int]:
    """Layer id (``0 .. num_layers + 1``) of every parameter name of ``backbone``.

    Args:
        backbone: a densekit backbone (``stem``, ``stages[i].blocks[j]``) or a TimmBackbone.
        num_layers: ``N`` of the decay rule (see the module docstring).
        decay_type: ``'layer_wise'`` or ``'stage_wise'``.

    Returns:
        ``{parameter name relative to the backbone: layer id}``.
    """
    if decay_type not in _DECAY_TYPES:
        raise ValueError(f"decay_type={decay_type!r} must be one of {_DECAY_TYPES}")
    if num_layers < 4 and decay_type == 'layer_wise':
        raise ValueError(f"layer_wise decay needs num_layers >= 4 (got {num_layers})")
    names = [n for n, _ in backbone.named_parameters()]
    parsed = {n: _stage_and_block(n) for n in names}
    stages = sorted({s for s, _ in parsed.values() if s is not None})
    if not stages:
        raise ValueError(f"{type(backbone).__name__}: no 'stages.<i>.' / 'layers.<i>.' parameters "
                         f"found, cannot assign layer-decay ids (first names: {names[:5]})")
    num_stages = stages[-1] + 1
    depth = {s: 1 + max([b for st, b in parsed.values() if st == s and b is not None],
                        default=0) for s in stages}
    first_stage_seen = False
    ids = {}
    for name in names:
        stage, block = parsed[name]
        if stage is None:
            # Before the first stage: the stem / patch embedding; after it: output norms.
            ids[name] = num_layers + 1 if first_stage_seen else 0
            continue
        first_stage_seen = True
        if decay_type == 'stage_wise':
            ids[name] = min(stage + 1, num_layers + 1)
        elif stage == num_stages - 1:
            ids[name] = num_layers
        elif stage < num_stages - 2:
            ids[name] = stage + 1
        else:  # the deep stage, split into equal groups of blocks
            groups = num_layers - (num_stages - 1)
            per_group = max(1, math.ceil(depth[stage] / groups))
            offset = 0 if block is None else block // per_group
            ids[name] = min(num_stages - 1 + offset, num_layers - 1)
    return ids


class DenseKitLayerDecayOptimizerConstructor(DefaultOptimWrapperConstructor):
    """``DefaultOptimWrapperConstructor`` + layer-wise lr decay and a backbone lr multiplier.

    Named with the ``DenseKit`` prefix because mmseg registers ``LayerDecayOptimizerConstructor``.
    See the module docstring for the ``paramwise_cfg`` keys.
    """

    def add_params(self, params: list[dict], module: nn.Module, prefix: str = '',
                   **kwargs) -> None:
        super().add_params(params, module, prefix=prefix, **kwargs)
        if prefix:  # only the top-level call post-processes, after the recursion is done
            return
        cfg = self.paramwise_cfg
        decay_rate = cfg.get('decay_rate')
        num_layers = cfg.get('num_layers')
        backbone_lr_mult = float(cfg.get('backbone_lr_mult', 1.0))
        if (decay_rate is None) != (num_layers is None):
            raise ValueError(f"paramwise_cfg needs both decay_rate and num_layers, got "
                             f"decay_rate={decay_rate!r}, num_layers={num_layers!r}")
        backbone = getattr(module, 'backbone', None)
        if backbone is None:
            if decay_rate is not None or backbone_lr_mult != 1.0:
                raise ValueError(f"{type(module).__name__} has no 'backbone' attribute; layer "
                                 f"decay / backbone_lr_mult cannot be applied")
            return
        ids = {}
        if decay_rate is not None:
            ids = backbone_layer_ids(backbone, int(num_layers),
                                     cfg.get('decay_type', 'layer_wise'))
        scale_of = {}
        for name, p in backbone.named_parameters():
            scale = backbone_lr_mult
            if ids:
                scale *= float(decay_rate) ** (int(num_layers) + 1 - ids[name])
            scale_of[id(p)] = (scale, ids.get(name))
        for group in params:
            (p,) = group['params']  # the default constructor makes one group per parameter
            if id(p) not in scale_of:
                continue
            scale, layer_id = scale_of[id(p)]
            group['lr'] = group.get('lr', self.base_lr) * scale
            group['lr_scale'] = scale
            if layer_id is not None:
                group['layer_id'] = layer_id


def register() -> None:
    from mmdet.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMDET
    from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMSEG
    for registry in (MMDET, MMSEG):
        _register(registry, DenseKitLayerDecayOptimizerConstructor)
