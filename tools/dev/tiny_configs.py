"""Tiny copies of the shipped configs, for the config tests and ``benchmarks/heads.py``.

``tiny(cfg, root)`` swaps the family's backbone for its ``*_test`` variant, narrows the heads to
64 channels (R-CNN heads 32), keeps one encoder / decoder layer and 10 queries, divides image
sizes / crops / pads by ``SHRINK`` and points every dataloader and evaluator at ``root`` (demo
data made by ``config_demo_data``). ``build_model`` / ``dataset`` build them in the config's
registry scope.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

import torch
from mmengine.config import Config, ConfigDict
from mmengine.registry import init_default_scope

from densekit.models import build_backbone, list_backbones

SHRINK = 8  # image sizes / crops / pads are divided by this in the tiny copies


# ----------------------------------------------------------------------------- config surgery

def walk(obj, fn, key=None):
    """Apply ``fn(key, value) -> new value`` to every dict entry, depth first."""
    if isinstance(obj, dict):
        for k in list(obj.keys()):
            obj[k] = walk(obj[k], fn, k)
        return obj
    if isinstance(obj, list):
        return [walk(v, fn, key) for v in obj]
    if isinstance(obj, tuple):
        return tuple(walk(v, fn, key) for v in obj)
    return fn(key, obj)


def shrink_size(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return v
    return max(16, int(round(v / SHRINK)))


_SIZE_KEYS = {'scale', 'scales', 'crop_size', 'size', 'max_size', 'stride'}


def shrink_images(obj):
    def fn(key, v):
        if key in _SIZE_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool):
            return shrink_size(v)
        return v
    return walk(obj, fn)


_WIDTH_256 = {'in_channels', 'out_channels', 'feat_channels', 'conv_out_channels', 'embed_dims',
              'channels'}


def narrow_heads(model_cfg):
    """Narrow every head / neck width to 64 (R-CNN: 32) and cut depths and query counts."""
    # mmdet's two-stage Deformable DETR hard-codes 128 positional features per coordinate
    # (DeformableDETR.get_proposal_pos_embed), i.e. embed_dims=256: keep its widths.
    # DINO's query-position MLP likewise (coordinate_to_encoding's default 128 features).
    narrow = model_cfg.get('type') not in ('DeformableDETR', 'DINO')
    # R-CNN heads have no GroupNorm(32): 32 channels are enough and halve their CPU time.
    width = 32 if model_cfg.get('type') in ('MaskRCNN', 'CascadeRCNN') else 64

    def fn(key, v):
        if isinstance(v, bool) or not isinstance(v, int):
            return v
        if not narrow and key in _WIDTH_256 | {'num_feats', 'feedforward_channels'}:
            return v
        if key in _WIDTH_256 and v in (256, 512):
            return width
        if key in ('fc_out_channels', 'feedforward_channels') and v >= 256:
            return width
        if key == 'num_feats' and v == 128:
            return 32
        if key == 'num_layers':
            return 1
        if key == 'num_queries':
            return 10
        # kMaX-DeepLab: per-stage widths and depths (list entries), attention / predictor widths
        if key == 'pixel_decoder_channels':
            return max(8, v // 16)
        if key in ('pixel_decoder_layers', 'transformer_decoder_layers'):
            return 1
        if key in ('base_filters', 'pixel_head_channels', 'mask_channels') and v >= 64:
            return 16
        if key == 'aux_semantic_channels':
            return 16
        if key == 'aux_semantic_low_level_channels':
            return 8
        if key in ('pixel_insdis_sample_k', 'aux_semantic_sample_k') and v > 256:
            return 256  # sampled pixels of kMaX's losses: fewer than a tiny crop's mask pixels
        if key == 'num_dn_queries':
            return 10
        if key == 'num_points' and v > 1000:  # point-sampled mask loss, not deformable points
            return 256
        # Fewer proposals / RoIs / detections: the R-CNN configs spend their CPU time there.
        if key == 'nms_pre' or (key == 'max_per_img' and v >= 1000):
            return 32
        if key in ('max_per_img', 'max_per_image'):
            return min(v, 20)
        if key == 'num' and v >= 256:  # RPN / R-CNN samplers
            return 32
        return v
    walk(model_cfg, fn)

    def no_syncbn(key, v):
        return 'BN' if key == 'type' and v == 'SyncBN' else v
    walk(model_cfg, no_syncbn)

    def keep_all(key, v):
        # Random weights score low: keep every detection so the metric has something to score.
        return 0.0 if key == 'score_thr' else v
    walk(model_cfg, keep_all)


def relocate_data(obj, root: Path):
    def fn(key, v):
        if isinstance(v, str) and v.startswith('data/'):
            return str(root / v[len('data/'):])
        return v
    return walk(obj, fn)


def head_channels(model) -> tuple[list, list]:
    """(where, in_channels) pairs that must equal the backbone's output channels."""
    pairs = []
    if 'neck' in model:
        pairs.append((('neck', 'in_channels'), list(_first_neck(model).in_channels)))
    elif 'panoptic_head' in model:
        pairs.append((('panoptic_head', 'in_channels'), list(model.panoptic_head.in_channels)))
    else:
        pairs.append((('decode_head', 'in_channels'), list(model.decode_head.in_channels)))
    return pairs


def backbone_channels(bb_cfg: dict, device: str) -> list[int]:
    kwargs = {k: v for k, v in bb_cfg.items() if k not in ('type', 'init_cfg')}
    with torch.device(device):
        bb = build_backbone(bb_cfg['type'], **kwargs)
    return [bb.feature_info[i]['num_chs'] for i in kwargs.get('out_indices', range(4))]


def _first_neck(model):
    """The neck that reads the backbone: mmdet takes a list of necks in sequence (FPN, DyHead)."""
    return model.neck[0] if isinstance(model.neck, (list, tuple)) else model.neck


def set_channels(model, chans: list[int]) -> None:
    if 'neck' in model:
        _first_neck(model).in_channels = chans
    elif 'panoptic_head' in model:
        model.panoptic_head.in_channels = chans
    else:
        model.decode_head.in_channels = chans
        if 'auxiliary_head' in model and model.auxiliary_head is not None:
            model.auxiliary_head.in_channels = chans[model.auxiliary_head.in_index]


class BackboneNotRegistered(LookupError):
    """The family's ``*_test`` backbone is not registered (a family still being written)."""


def require_backbone(name: str) -> None:
    if name not in list_backbones():
        raise BackboneNotRegistered(f"backbone '{name}' is not registered yet")


def tiny(cfg: Config, root: Path) -> Config:
    cfg = copy.deepcopy(cfg)
    full = cfg.model.backbone
    # convnext_tiny -> convnext, halonet26t -> halonet; litv2_s -> litv2 (digits in the family);
    # dat_pp_tiny -> dat_pp (an underscore in the family): the first form naming a registered
    # test variant
    names = [f"{re.match(r'[a-z]+', full.type).group(0)}_test", f"{full.type.split('_')[0]}_test",
             f"{full.type.rsplit('_', 1)[0]}_test"]
    test_name = next((n for n in names if n in list_backbones()), names[0])
    require_backbone(test_name)
    bb = dict(type=test_name, out_indices=tuple(full.get('out_indices', (0, 1, 2, 3))))
    cfg.model.backbone = ConfigDict(bb)
    set_channels(cfg.model, backbone_channels(bb, 'cpu'))
    backbone = cfg.model.pop('backbone')
    narrow_heads(cfg.model)
    cfg.model.backbone = backbone
    cfg.model.data_preprocessor = shrink_images(cfg.model.data_preprocessor)
    if 'test_cfg' in cfg.model and cfg.model.test_cfg:
        cfg.model.test_cfg = shrink_images(cfg.model.test_cfg)
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[name] = relocate_data(shrink_images(cfg[name]), root)
    for name in ('val_evaluator', 'test_evaluator'):
        cfg[name] = relocate_data(cfg[name], root)
    if 'tta_pipeline' in cfg:
        cfg.tta_pipeline = shrink_images(cfg.tta_pipeline)
    return cfg


# ----------------------------------------------------------------------------- building blocks

def registries(scope: str):
    init_default_scope(scope)
    if scope == 'mmdet':
        from mmdet.registry import DATASETS, MODELS
    else:
        from mmseg.registry import DATASETS, MODELS
    return MODELS, DATASETS


def build_model(cfg: Config):
    models, _ = registries(cfg.default_scope)
    model = models.build(cfg.model)
    model.init_weights()
    return model


def dataset(cfg: Config, which: str):
    _, datasets = registries(cfg.default_scope)
    # serialize_data packs the annotations for worker processes and runs gc.collect(): ~0.7 s
    # per dataset here, for nothing.
    return datasets.build(dict(cfg[which].dataset, serialize_data=False))
