"""mmdet's Mask R-CNN trains one step and predicts on CPU with densekit's portable mmcv ops
(RPN and RoI-head NMS, batched NMS, RoIAlign for boxes and masks)."""
import torch

from mmcv_parity import require_portable_ext

NUM_CLASSES = 3


def _tiny_mask_rcnn_cfg() -> dict:
    def nms(thr):
        return dict(type='nms', iou_threshold=thr)

    def extractor(size):
        return dict(type='SingleRoIExtractor', out_channels=32, featmap_strides=[4, 8, 16, 32],
                    roi_layer=dict(type='RoIAlign', output_size=size, sampling_ratio=0))

    def assigner(pos, neg, min_pos):
        return dict(type='MaxIoUAssigner', pos_iou_thr=pos, neg_iou_thr=neg,
                    min_pos_iou=min_pos, match_low_quality=True, ignore_iof_thr=-1)

    rpn_proposal = dict(nms_pre=300, max_per_img=100, nms=nms(0.7), min_bbox_size=0)
    return dict(
        type='MaskRCNN',
        data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_mask=True,
                               pad_size_divisor=32),
        backbone=dict(type='ResNet', depth=18, base_channels=16, out_indices=(0, 1, 2, 3),
                      norm_cfg=dict(type='BN'), norm_eval=False, style='pytorch'),
        neck=dict(type='FPN', in_channels=[16, 32, 64, 128], out_channels=32, num_outs=5),
        rpn_head=dict(
            type='RPNHead', in_channels=32, feat_channels=32,
            anchor_generator=dict(type='AnchorGenerator', scales=[8], ratios=[0.5, 1.0, 2.0],
                                  strides=[4, 8, 16, 32, 64]),
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4,
                            target_stds=[1.0] * 4),
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        roi_head=dict(
            type='StandardRoIHead', bbox_roi_extractor=extractor(7),
            bbox_head=dict(
                type='Shared2FCBBoxHead', in_channels=32, fc_out_channels=64, roi_feat_size=7,
                num_classes=NUM_CLASSES,
                bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4,
                                target_stds=[0.1, 0.1, 0.2, 0.2]),
                reg_class_agnostic=False,
                loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
                loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
            mask_roi_extractor=extractor(14),
            mask_head=dict(type='FCNMaskHead', num_convs=2, in_channels=32,
                           conv_out_channels=32, num_classes=NUM_CLASSES,
                           loss_mask=dict(type='CrossEntropyLoss', use_mask=True,
                                          loss_weight=1.0))),
        train_cfg=dict(
            rpn=dict(assigner=assigner(0.7, 0.3, 0.3),
                     sampler=dict(type='RandomSampler', num=64, pos_fraction=0.5,
                                  neg_pos_ub=-1, add_gt_as_proposals=False),
                     allowed_border=-1, pos_weight=-1, debug=False),
            rpn_proposal=rpn_proposal,
            rcnn=dict(assigner=assigner(0.5, 0.5, 0.5),
                      sampler=dict(type='RandomSampler', num=64, pos_fraction=0.25,
                                   neg_pos_ub=-1, add_gt_as_proposals=True),
                      mask_size=28, pos_weight=-1, debug=False)),
        test_cfg=dict(rpn=rpn_proposal,
                      rcnn=dict(score_thr=0.0, nms=nms(0.5), max_per_img=20,
                                mask_thr_binary=0.5)))


def test_mask_rcnn_loss_and_predict_on_cpu():
    require_portable_ext()
    from mmdet.registry import MODELS
    from mmengine.config import ConfigDict
    from mmdet.testing import demo_mm_inputs
    from mmdet.utils import register_all_modules
    register_all_modules()
    torch.manual_seed(0)
    model = MODELS.build(ConfigDict(_tiny_mask_rcnn_cfg()))
    packed = demo_mm_inputs(2, [(3, 96, 128), (3, 128, 96)], num_items=[3, 2],
                            num_classes=NUM_CLASSES, with_mask=True)
    model.train()
    data = model.data_preprocessor(packed, True)
    losses = model(**data, mode='loss')
    for key in ('loss_rpn_cls', 'loss_cls', 'loss_bbox', 'loss_mask'):
        assert key in losses, sorted(losses)
    total = sum(v.sum() if torch.is_tensor(v) else sum(x.sum() for x in v)
                for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert model.roi_head.mask_head.conv_logits.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        results = model(**model.data_preprocessor(packed, False), mode='predict')
    assert len(results) == 2
    for res, (h, w) in zip(results, [(96, 128), (128, 96)]):
        inst = res.pred_instances
        assert 0 < len(inst) <= 20
        assert inst.bboxes.shape == (len(inst), 4) and inst.masks.shape[1:] == (h, w)
        assert (inst.labels < NUM_CLASSES).all()
