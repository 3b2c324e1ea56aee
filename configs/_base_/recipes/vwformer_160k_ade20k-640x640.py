# VWFormer, ADE20K, 640x640 crops (the ImageNet-22k models), 160k iterations at batch 16: the
# 512x512 recipe on the 640 pipeline; the official test resizes the short side to 640, then both
# sides to multiples of 64.
_base_ = [
    '../models/vwformer.py', '../datasets/ade20k_640x640.py',
    '../schedules/schedule_160k.py', '../default_runtime_seg.py',
]
model = dict(data_preprocessor=dict(size=(640, 640)))
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2560, 640), keep_ratio=True),
    dict(type='ResizeToMultiple', size_divisor=64),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='DenseKitLayerDecayOptimizerConstructor',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(bias_decay_mult=0.0, flat_decay_mult=0.0))
train_dataloader = dict(batch_size=2)
