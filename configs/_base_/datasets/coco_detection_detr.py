# COCO detection with the DETR-family training augmentation (Deformable DETR, DINO): multi-scale
# 480..800 shorter side, or resize 400..600 (long side up to 4200, i.e. unconstrained for COCO's
# aspect ratios) + random crop + multi-scale resize. Images without boxes are kept.
_base_ = './coco_detection.py'

_ms_scales = [(s, 1333) for s in range(480, 801, 32)]
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomChoice',
         transforms=[
             [dict(type='RandomChoiceResize', scales=_ms_scales, keep_ratio=True)],
             [dict(type='RandomChoiceResize', scales=[(400, 4200), (500, 4200), (600, 4200)],
                   keep_ratio=True),
              dict(type='RandomCrop', crop_type='absolute_range', crop_size=(384, 600),
                   allow_negative_crop=True),
              dict(type='RandomChoiceResize', scales=_ms_scales, keep_ratio=True)],
         ]),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(
    dataset=dict(filter_cfg=dict(filter_empty_gt=False), pipeline=train_pipeline))
