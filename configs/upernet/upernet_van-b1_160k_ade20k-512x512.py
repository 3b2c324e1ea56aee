# VAN-B1: the VAN-B0 config with the VAN-B1 backbone (VAN-Segmentation's
# upernet_van_b1_512x512_160k_ade20k.py).
_base_ = './upernet_van-b0_160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        type='van_b1',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/van_b1_in1k.pth')),
    decode_head=dict(in_channels=[64, 128, 320, 512]),
    auxiliary_head=dict(in_channels=320))
