# VWFormer, ADE20K, 512x512 crops, 160k iterations at batch 16 (8 GPUs x 2; the official 4 x 4):
# the official test pipeline resizes the short side to 512 and then both sides to multiples of 64
# (`ResizeToMultiple`); the prediction is resized back to the image. Optimizer: AdamW lr 1e-4,
# weight decay 0.05, none on biases and 1-d parameters (the official layer-decay constructor's
# rule); family configs set the layer decay.
_base_ = [
    '../models/vwformer.py', '../datasets/ade20k_512x512.py',
    '../schedules/schedule_160k.py', '../default_runtime_seg.py',
]
model = dict(data_preprocessor=dict(size=(512, 512)))
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='ResizeToMultiple', size_divisor=64),
    # Annotations after Resize: mIoU is computed at the original resolution.
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
