# Mask2Former, ADE20K semantic segmentation, 640x640 crops, 160k iterations at batch 16, poly
# (power 0.9) decay without warm-up (mmseg 1.2's Swin-B / Swin-L 640 configs): the 512x512
# recipe with the shorter side resized to 320..1280 (max 2560) before the crop.
_base_ = [
    '../models/mask2former_semantic.py', '../datasets/ade20k_640x640.py',
    '../schedules/schedule_160k.py', '../default_runtime_seg.py', './mask2former_optim.py',
]
crop_size = (640, 640)
model = dict(data_preprocessor=dict(size=crop_size))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomChoiceResize', scales=[int(640 * x * 0.1) for x in range(5, 21)],
         resize_type='ResizeShortestEdge', max_size=2560),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(batch_size=2, dataset=dict(pipeline=train_pipeline))
param_scheduler = [
    dict(type='PolyLR', eta_min=0, power=0.9, begin=0, end=160000, by_epoch=False),
]
train_cfg = dict(val_interval=5000)
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=5000, save_best='mIoU'))
