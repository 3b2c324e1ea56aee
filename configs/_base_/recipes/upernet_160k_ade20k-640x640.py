# UPerNet, ADE20K, 640x640 crops, 160k iterations at batch 16 (8 GPUs x 2): the 512x512 recipe
# (AdamW lr 6e-5, weight decay 0.01, none on norms / position tables; ConvNeXt overrides it with
# its layer-decay recipe) on the 640 pipeline, used by the ImageNet-22k large models.
_base_ = [
    '../models/upernet.py', '../datasets/ade20k_640x640.py',
    '../schedules/schedule_160k.py', '../default_runtime_seg.py',
]
model = dict(data_preprocessor=dict(size=(640, 640)))
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='DenseKitLayerDecayOptimizerConstructor',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(norm_decay_mult=0.0, custom_keys={
        'relative_position_bias_table': dict(decay_mult=0.0),
        'absolute_pos_embed': dict(decay_mult=0.0),
        'rpb': dict(decay_mult=0.0),
    }))
train_dataloader = dict(batch_size=2)
