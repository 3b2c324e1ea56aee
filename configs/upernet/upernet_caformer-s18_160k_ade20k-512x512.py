# upernet: CAFormer-S18 backbone (timm-wrapped, densekit/models/backbones/timm_seed.py). No
# official dense-prediction config is published: densekit's UPerNet recipe, drop path 0.15 (the
# ImageNet one of CAFormer-S18).
_base_ = '../_base_/recipes/upernet_160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='caformer_s18',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.15,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/caformer_s18_in1k.pth')),
    decode_head=dict(in_channels=[64, 128, 320, 512]),
    auxiliary_head=dict(in_channels=320))
