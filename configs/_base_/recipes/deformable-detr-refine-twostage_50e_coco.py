# Deformable DETR (box refinement + two-stage), COCO detection, 50 epochs (lr x0.1 after 40),
# batch 32: AdamW lr 2e-4, weight decay 1e-4; lr x0.1 for the backbone and for the sampling
# offsets / reference points of the deformable attention; gradient clipping at 0.1.
_base_ = [
    '../models/deformable-detr.py', '../datasets/coco_detection_detr.py',
    '../schedules/detr_50e.py', '../default_runtime_det.py',
]
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='DenseKitLayerDecayOptimizerConstructor',
    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=1e-4),
    clip_grad=dict(max_norm=0.1, norm_type=2),
    paramwise_cfg=dict(backbone_lr_mult=0.1, custom_keys={
        'sampling_offsets': dict(lr_mult=0.1),
        'reference_points': dict(lr_mult=0.1),
    }))
auto_scale_lr = dict(base_batch_size=32)
