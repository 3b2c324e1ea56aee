# 24 epochs, AdamW (lr 1e-4, weight decay 0.01), batch 16 (8 GPUs x 2) with a one-cycle-shaped
# schedule (lr/25 -> lr over the first 30%, cosine down to lr/2500): the NYUv2 / KITTI recipe of the
# Monocular-Depth-Estimation-Toolbox (schedule_24x: OneCycle, max lr 1e-4, div_factor 25,
# final_div_factor 100), close to AdaBins' 25 epochs with one-cycle. Built from LinearLR +
# CosineAnnealingLR because mmengine's OneCycleLR keeps a bound method in its state, which
# densekit's weights-only checkpoint loader (rightly) refuses. No weight decay on norms, position
# embeddings and relative position tables.
max_epochs = 24
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.01),
    clip_grad=dict(max_norm=35, norm_type=2),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        custom_keys={
            'absolute_pos_embed': dict(decay_mult=0.0),
            'relative_position_bias_table': dict(decay_mult=0.0),
        }))
warmup_epochs = 7  # 30% of 24
param_scheduler = [
    dict(type='LinearLR', start_factor=1 / 25, end_factor=1.0, begin=0, end=warmup_epochs,
         by_epoch=True, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-4 / 2500, begin=warmup_epochs, end=max_epochs,
         T_max=max_epochs - warmup_epochs, by_epoch=True, convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=2)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
