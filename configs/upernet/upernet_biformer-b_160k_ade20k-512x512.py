# BiFormer-B: the BiFormer-S config with the BiFormer-B backbone (official
# upernet.biformer_base.py: drop path 0.4).
_base_ = './upernet_biformer-s_160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        type='biformer_base',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/biformer_base_in1k.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
