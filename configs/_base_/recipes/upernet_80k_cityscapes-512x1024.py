# UPerNet, Cityscapes (19 classes), 512x1024 crops, 80k iterations at batch 16, with the same
# optimizer as the ADE20K recipe (no backbone paper publishes a Cityscapes UPerNet recipe).
_base_ = [
    '../models/upernet.py', '../datasets/cityscapes_512x1024.py',
    '../schedules/schedule_80k.py', '../default_runtime_seg.py',
]
model = dict(
    data_preprocessor=dict(size=(512, 1024)),
    decode_head=dict(num_classes=19),
    auxiliary_head=dict(num_classes=19))
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='DenseKitLayerDecayOptimizerConstructor',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(norm_decay_mult=0.0, custom_keys={
        'relative_position_bias_table': dict(decay_mult=0.0),
        'absolute_pos_embed': dict(decay_mult=0.0),
        'rpb': dict(decay_mult=0.0),
    }))
