# upernet: SLAB-Swin-T backbone (slab family base for this recipe). xinghaochen/SLAB publishes
# detection configs only, so this is densekit's UPerNet recipe as it is with Swin-T's segmentation
# drop path (0.3) and the official dense backbone's BatchNorms in eval mode (norm_eval).
_base_ = '../_base_/recipes/upernet_160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='slab_swin_t',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.3,
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/slab_swin_tiny.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
