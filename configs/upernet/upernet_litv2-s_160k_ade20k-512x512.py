# upernet: LITv2-S backbone (litv2 family base for this recipe). LITv2 publishes ADE20K results
# with Semantic FPN (80k) only, so this is densekit's UPerNet recipe as it is with the official
# dense backbone settings (alpha 0.9, HiLo windows (0, 0, 2, 1)) and the drop path 0.2 of its
# detection and segmentation configs.
_base_ = '../_base_/recipes/upernet_160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='litv2_s',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/litv2_s.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
