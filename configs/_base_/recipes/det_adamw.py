# The AdamW recipe of the Swin / ConvNeXt / NAT detection configs (Mask R-CNN, Cascade Mask
# R-CNN): lr 1e-4, weight decay 0.05 except on norms and relative- / absolute-position tables.
# Family configs add layer decay (ConvNeXt) or change lr / drop path.
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='DenseKitLayerDecayOptimizerConstructor',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0, custom_keys={
        'relative_position_bias_table': dict(decay_mult=0.0),
        'absolute_pos_embed': dict(decay_mult=0.0),
        'rpb': dict(decay_mult=0.0),
    }))
