# 24 epochs, AdamW (lr 1e-4, weight decay 0.01) with a one-cycle schedule (max lr 1e-4,
# div_factor 25, final_div_factor 100), batch 16 (8 GPUs x 2) — the NYUv2 / KITTI recipe of the
# Monocular-Depth-Estimation-Toolbox (schedule_24x), close to AdaBins' 25 epochs with one-cycle.
# No weight decay on norms, position embeddings and relative position tables.
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
param_scheduler = [
    dict(type='OneCycleLR', eta_max=1e-4, total_steps=max_epochs, pct_start=0.3,
         div_factor=25, final_div_factor=100, by_epoch=True, convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=2)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
