"""The depth estimator: backbone + depth head, trained with pixel losses on valid ground truth.

Predictions are returned in ``SegDataSample.pred_depth_map`` at the original image size (padding,
resizing and the KITTI-benchmark crop undone); mmseg's ``PackSegInputs`` packs the ground truth
into ``SegDataSample.gt_depth_map``. Heads and losses are the core's
(:mod:`densekit.models.depth`).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmengine.structures import PixelData

from densekit.mm.registry import deprecated_alias
from densekit.models.depth import valid_depth_mask


class DenseKitDepthEstimator(BaseModel):
    """Backbone + depth decoder, trained with pixel losses on valid ground truth.

    Args:
        backbone: config of a backbone registered in mmseg's ``MODELS`` (densekit backbones are).
        decode_head: config of a depth head (``DPTDepthHead`` / ``FPNDepthHead``) whose
            ``in_channels`` match the backbone's outputs.
        losses: configs of the losses (``DenseKitSILogLoss``, ``L1DepthLoss``), summed; ``None``:
            SILog alone (BTS / AdaBins).
        min_depth: pixels with ``gt <= min_depth`` are ignored by the losses.
        max_depth: pixels with ``gt > max_depth`` are ignored by the losses.
        flip_test: average the prediction with that of the flipped image at test time (BTS,
            AdaBins and NeWCRFs evaluate this way).
        data_preprocessor: e.g. ``dict(type='SegDataPreProcessor', mean=..., std=...,
            bgr_to_rgb=True, seg_pad_val=0)``; pad depth with 0 so padding is invalid.
        init_cfg: mmengine init config.
    """

    def __init__(self,
                 backbone: dict,
                 decode_head: dict,
                 losses: Sequence[dict] | None = None,
                 min_depth: float = 1e-3,
                 max_depth: float = 10.0,
                 flip_test: bool = False,
                 data_preprocessor: dict | None = None,
                 init_cfg: dict | None = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        from mmseg.registry import MODELS
        self.backbone = MODELS.build(backbone)
        self.decode_head = MODELS.build(decode_head)
        losses = list(losses) if losses is not None else [dict(type='DenseKitSILogLoss')]
        if not losses:
            raise ValueError(f'{type(self).__name__}: losses must not be empty')
        self.losses = torch.nn.ModuleList(MODELS.build(cfg) for cfg in losses)
        names = [getattr(l, 'loss_name', f'loss_{i}') for i, l in enumerate(self.losses)]
        if len(set(names)) != len(names):
            raise ValueError(f"{type(self).__name__}: loss names {names} must be distinct (set loss_name)")
        self.min_depth, self.max_depth, self.flip_test = min_depth, max_depth, flip_test
        act = getattr(self.decode_head, 'activation', None)
        if getattr(act, 'mode', None) == 'sigmoid' and act.max_depth < max_depth:
            raise ValueError(f"{type(self).__name__}: the head's output is bounded by max_depth="
                             f"{act.max_depth} < the estimator's max_depth={max_depth}; set "
                             f"decode_head.max_depth={max_depth}")

    def extract_feat(self, inputs: torch.Tensor):
        return self.backbone(inputs)

    def _predict_depth(self, inputs: torch.Tensor) -> torch.Tensor:
        """Depth ``[N, 1, H, W]`` at the (padded) input size."""
        depth = self.decode_head(self.extract_feat(inputs))
        if depth.shape[-2:] != inputs.shape[-2:]:
            depth = F.interpolate(depth, size=inputs.shape[-2:], mode='bilinear', align_corners=False)
        return depth

    def forward(self, inputs: torch.Tensor, data_samples=None, mode: str = 'tensor'):
        """mmengine's three modes: ``'loss'`` (dict of losses), ``'predict'`` (data samples with
        ``pred_depth_map`` at the original size), ``'tensor'`` (depth ``[N, 1, H, W]``)."""
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            return self._predict_depth(inputs)
        raise ValueError(f"{type(self).__name__}: mode={mode!r} must be 'loss', 'predict' or 'tensor'")

    def loss(self, inputs: torch.Tensor, data_samples) -> dict:
        # Losses in fp32 even under AMP: logs of fp16 depths lose the small relative errors.
        pred = self._predict_depth(inputs).float()
        gt = torch.stack([ds.gt_depth_map.data for ds in data_samples]).float()
        if gt.shape != pred.shape:
            raise ValueError(f"{type(self).__name__}: gt_depth_map batch {tuple(gt.shape)} does not match "
                             f"the prediction {tuple(pred.shape)}; keep depth aligned in the pipeline")
        mask = valid_depth_mask(gt, self.min_depth, self.max_depth)
        return {loss.loss_name: loss(pred, gt, mask) for loss in self.losses}

    def predict(self, inputs: torch.Tensor, data_samples=None):
        depth = self._predict_depth(inputs)
        if self.flip_test:
            depth = 0.5 * (depth + self._predict_depth(inputs.flip(-1)).flip(-1))
        if data_samples is None:
            return depth
        for i, ds in enumerate(data_samples):
            full = self._to_original(depth[i:i + 1], ds.metainfo)
            ds.set_data(dict(pred_depth_map=PixelData(data=full[0])))
        return data_samples

    @staticmethod
    def _to_original(depth: torch.Tensor, meta: dict) -> torch.Tensor:
        """Undo padding, resizing and the KITTI-benchmark crop: ``[1, 1, H_ori, W_ori]``."""
        pad = meta.get('img_padding_size', meta.get('padding_size'))
        if pad is not None:
            left, right, top, bottom = (int(p) for p in pad)
            depth = depth[..., top:depth.shape[-2] - bottom, left:depth.shape[-1] - right]
        elif 'img_shape' in meta:
            h, w = meta['img_shape'][:2]
            depth = depth[..., :h, :w]
        if 'kb_crop_box' in meta:
            top, left = meta['kb_crop_box']
            full = depth.new_zeros(depth.shape[:2] + tuple(meta['kb_ori_shape']))
            full[..., top:top + depth.shape[-2], left:left + depth.shape[-1]] = depth
            return full
        ori = tuple(meta.get('ori_shape', depth.shape[-2:]))[:2]
        if tuple(depth.shape[-2:]) != ori:
            depth = F.interpolate(depth, size=ori, mode='bilinear', align_corners=False)
        return depth


DKDepthEstimator = deprecated_alias(DenseKitDepthEstimator, 'DKDepthEstimator')
