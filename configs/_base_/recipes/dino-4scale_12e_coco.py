# DINO-4scale, COCO detection, 12 epochs (lr x0.1 after 11), batch 16: AdamW lr 1e-4, weight
# decay 1e-4, backbone lr x0.1, gradient clipping at 0.1 (mmdet's / the DINO paper's recipe).
_base_ = [
    '../models/dino-4scale.py', '../datasets/coco_detection_detr.py',
    '../schedules/detr_12e.py', '../default_runtime_det.py',
]
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='DenseKitLayerDecayOptimizerConstructor',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4),
    clip_grad=dict(max_norm=0.1, norm_type=2),
    paramwise_cfg=dict(backbone_lr_mult=0.1))
