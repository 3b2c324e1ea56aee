# upernet: XCiT-S12/16 backbone (timm-wrapped, densekit/models/backbones/timm_seed.py) with the
# official simple pyramid (blocks 4 / 6 / 8 / 12 -> strides 4 / 8 / 16 / 32, 384 channels each).
_base_ = '../_base_/recipes/upernet_160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='xcit_small_12_p16',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.05,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/xcit_small_12_p16_in1k.pth')),
    decode_head=dict(in_channels=[384, 384, 384, 384]),
    auxiliary_head=dict(in_channels=384))
