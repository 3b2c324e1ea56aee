# upernet: DAT-T++ backbone (dat_pp family base for this recipe). The official
# LeapLabTHU/DAT-Segmentation configs/dat/upn_tiny_160k_dp03_lr6.py: drop path 0.3, AdamW lr 6e-5
# / weight decay 0.01 with none on norms and the deformable attention's `rpe_table`, 1500
# warm-up iterations; mixed precision there, fp32 here.
_base_ = '../_base_/recipes/upernet_160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='dat_pp_tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/dat_pp_tiny_in1k_224.pth')),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'rpe_table': dict(decay_mult=0.0)}))
