"""Times an mmdet Mask R-CNN R-18 FPN train step and a predict step on CPU.

Run it once in densekit's environment (portable ``mmcv._ext``) and once in an environment with
the compiled mmcv (e.g. the golden-fixture venv of ``tools/dev/make_mmcv_golden.py`` plus
``mmdet==3.3.0``) to compare the portable ops with mmcv's kernels end to end::

    OMP_NUM_THREADS=2 python benchmarks/mmcv_ops_mask_rcnn.py
    OMP_NUM_THREADS=2 /tmp/mmcv_full_venv/bin/python benchmarks/mmcv_ops_mask_rcnn.py --no-densekit
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import samples_ms  # noqa: E402  (benchmarks/_timing.py)


def mask_rcnn_r18_cfg(num_classes: int = 80) -> dict:
    """mmdet's ``mask-rcnn_r50_fpn`` with a ResNet-18 backbone (standard train / test cfgs)."""
    def extractor(size):
        return dict(type='SingleRoIExtractor', out_channels=256, featmap_strides=[4, 8, 16, 32],
                    roi_layer=dict(type='RoIAlign', output_size=size, sampling_ratio=0))

    def assigner(pos, neg, min_pos):
        return dict(type='MaxIoUAssigner', pos_iou_thr=pos, neg_iou_thr=neg,
                    min_pos_iou=min_pos, match_low_quality=True, ignore_iof_thr=-1)

    return dict(
        type='MaskRCNN',
        data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_mask=True,
                               pad_size_divisor=32),
        backbone=dict(type='ResNet', depth=18, out_indices=(0, 1, 2, 3), frozen_stages=1,
                      norm_cfg=dict(type='BN', requires_grad=True), norm_eval=True,
                      style='pytorch'),
        neck=dict(type='FPN', in_channels=[64, 128, 256, 512], out_channels=256, num_outs=5),
        rpn_head=dict(
            type='RPNHead', in_channels=256, feat_channels=256,
            anchor_generator=dict(type='AnchorGenerator', scales=[8], ratios=[0.5, 1.0, 2.0],
                                  strides=[4, 8, 16, 32, 64]),
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4,
                            target_stds=[1.0] * 4),
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        roi_head=dict(
            type='StandardRoIHead', bbox_roi_extractor=extractor(7),
            bbox_head=dict(type='Shared2FCBBoxHead', in_channels=256, fc_out_channels=1024,
                           roi_feat_size=7, num_classes=num_classes,
                           bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4,
                                           target_stds=[0.1, 0.1, 0.2, 0.2]),
                           reg_class_agnostic=False,
                           loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False,
                                         loss_weight=1.0),
                           loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
            mask_roi_extractor=extractor(14),
            mask_head=dict(type='FCNMaskHead', num_convs=4, in_channels=256,
                           conv_out_channels=256, num_classes=num_classes,
                           loss_mask=dict(type='CrossEntropyLoss', use_mask=True,
                                          loss_weight=1.0))),
        train_cfg=dict(
            rpn=dict(assigner=assigner(0.7, 0.3, 0.3),
                     sampler=dict(type='RandomSampler', num=256, pos_fraction=0.5,
                                  neg_pos_ub=-1, add_gt_as_proposals=False),
                     allowed_border=-1, pos_weight=-1, debug=False),
            rpn_proposal=dict(nms_pre=2000, max_per_img=1000,
                              nms=dict(type='nms', iou_threshold=0.7), min_bbox_size=0),
            rcnn=dict(assigner=assigner(0.5, 0.5, 0.5),
                      sampler=dict(type='RandomSampler', num=512, pos_fraction=0.25,
                                   neg_pos_ub=-1, add_gt_as_proposals=True),
                      mask_size=28, pos_weight=-1, debug=False)),
        test_cfg=dict(
            rpn=dict(nms_pre=1000, max_per_img=1000, nms=dict(type='nms', iou_threshold=0.7),
                     min_bbox_size=0),
            rcnn=dict(score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5), max_per_img=100,
                      mask_thr_binary=0.5)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--no-densekit', action='store_true',
                        help='do not import densekit (use an installed compiled mmcv)')
    parser.add_argument('--steps', type=int, default=4)
    parser.add_argument('--size', type=int, nargs=2, default=(256, 320))
    args = parser.parse_args()
    if not args.no_densekit:
        import densekit  # noqa: F401
    from mmengine.config import ConfigDict
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs
    from mmdet.utils import register_all_modules
    from mmcv.utils import ext_loader
    register_all_modules()
    ext = ext_loader.load_ext('_ext', ['nms'])
    kind = 'portable' if getattr(ext, '__densekit_portable__', False) else 'compiled'
    torch.manual_seed(0)
    model = MODELS.build(ConfigDict(mask_rcnn_r18_cfg()))
    h, w = args.size
    packed = demo_mm_inputs(2, [(3, h, w)] * 2, num_items=[6, 4], num_classes=80,
                            with_mask=True)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def train_step():
        model.train()
        losses = model(**model.data_preprocessor(packed, True), mode='loss')
        loss, _ = model.parse_losses(losses)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def predict():
        model(**model.data_preprocessor(packed, False), mode='predict')

    # the first step is a warm-up
    train_t = samples_ms(train_step, 'cpu', warmup=1, reps=args.steps - 1)
    model.eval()
    with torch.no_grad():
        pred_t = samples_ms(predict, 'cpu', warmup=1, reps=args.steps - 1)
    med = lambda v: sorted(v)[len(v) // 2] / 1e3  # noqa: E731  (seconds)
    print(f'mmcv ops: {kind}; torch threads {torch.get_num_threads()}; image {h}x{w}, batch 2')
    print(f'train step median {med(train_t):.2f} s; predict median {med(pred_t):.2f} s')


if __name__ == '__main__':
    main()
