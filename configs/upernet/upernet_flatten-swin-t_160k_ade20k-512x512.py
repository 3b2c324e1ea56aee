# upernet: FLatten-Swin-T backbone (flatten family base for this recipe). No official dense config
# exists; densekit's UPerNet recipe as it is, with Swin-T's segmentation drop path (0.3).
_base_ = '../_base_/recipes/upernet_160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='flatten_swin_t',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/flatten_swin_t.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
