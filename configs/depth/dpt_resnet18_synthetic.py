# Quickstart: DPT-style decoder on a timm ResNet-18 (random init) trained on densekit's synthetic
# depth set (`python tools/make_depth_demo.py data/synthetic_depth` first); runs on a CPU.
#   python tools/train.py configs/depth/dpt_resnet18_synthetic.py
#   python tools/test.py configs/depth/dpt_resnet18_synthetic.py CKPT --show-dir vis
_base_ = [
    '../_base_/models/dpt_depth.py', '../_base_/datasets/synthetic_depth.py',
    '../_base_/default_runtime_depth.py'
]
model = dict(
    backbone=dict(_delete_=True, type='TimmBackbone', model_name='resnet18', out_indices=(1, 2, 3, 4)),
    decode_head=dict(in_channels=[64, 128, 256, 512], channels=64, head_channels=32, max_depth=10.0),
    flip_test=False)
max_epochs = 20
optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.01))
param_scheduler = [  # one-cycle shape, as configs/_base_/schedules/depth_24e.py
    dict(type='LinearLR', start_factor=1 / 25, end_factor=1.0, begin=0, end=6, by_epoch=True,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-3 / 2500, begin=6, end=max_epochs, T_max=max_epochs - 6,
         by_epoch=True, convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=5)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(logger=dict(interval=10),
                     checkpoint=dict(interval=5))
