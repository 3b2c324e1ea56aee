# COCO instance segmentation with the "3x" multi-scale + crop training augmentation used by the
# Swin / ConvNeXt / NAT detection configs (from DETR / Sparse R-CNN): shorter side 480..800
# (step 32), or a resize to 400..600 + a random 384..600 crop followed by the same multi-scale
# resize. Evaluation is single scale 1333x800 (inherited).
_base_ = './coco_instance.py'

_ms_scales = [(s, 1333) for s in range(480, 801, 32)]
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomChoice',
         transforms=[
             [dict(type='RandomChoiceResize', scales=_ms_scales, keep_ratio=True)],
             [dict(type='RandomChoiceResize', scales=[(400, 1333), (500, 1333), (600, 1333)],
                   keep_ratio=True),
              dict(type='RandomCrop', crop_type='absolute_range', crop_size=(384, 600),
                   allow_negative_crop=True),
              dict(type='RandomChoiceResize', scales=_ms_scales, keep_ratio=True)],
         ]),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
