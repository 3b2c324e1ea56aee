# Mask2Former, Cityscapes semantic segmentation (19 classes), 512x1024 crops, 90k iterations at
# batch 16, poly (power 0.9) decay; training resizes the shorter side to 512..2048 first.
_base_ = [
    '../models/mask2former_semantic.py', '../datasets/cityscapes_512x1024.py',
    '../schedules/schedule_90k.py', '../default_runtime_seg.py', './mask2former_optim.py',
]
crop_size = (512, 1024)
num_classes = 19
model = dict(
    data_preprocessor=dict(size=crop_size),
    decode_head=dict(num_classes=num_classes,
                     loss_cls=dict(class_weight=[1.0] * num_classes + [0.1])))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomChoiceResize', scales=[int(1024 * x * 0.1) for x in range(5, 21)],
         resize_type='ResizeShortestEdge', max_size=4096),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
param_scheduler = [
    dict(type='PolyLR', eta_min=0, power=0.9, begin=0, end=90000, by_epoch=False),
]
train_cfg = dict(val_interval=5000)
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=5000, save_best='mIoU'))
