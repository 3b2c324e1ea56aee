# The Mask2Former optimizer (shared by the COCO, ADE20K and Cityscapes recipes): AdamW lr 1e-4,
# weight decay 0.05, backbone lr x0.1, no weight decay on norms (backbone included), query /
# level embeddings and position tables; gradient clipping at 0.01.
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='DenseKitLayerDecayOptimizerConstructor',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    clip_grad=dict(max_norm=0.01, norm_type=2),
    paramwise_cfg=dict(
        backbone_lr_mult=0.1,
        norm_decay_mult=0.0,
        custom_keys={
            'query_embed': dict(lr_mult=1.0, decay_mult=0.0),
            'query_feat': dict(lr_mult=1.0, decay_mult=0.0),
            'level_embed': dict(lr_mult=1.0, decay_mult=0.0),
            'relative_position_bias_table': dict(decay_mult=0.0),
            'absolute_pos_embed': dict(decay_mult=0.0),
            'rpb': dict(decay_mult=0.0),
        }))
