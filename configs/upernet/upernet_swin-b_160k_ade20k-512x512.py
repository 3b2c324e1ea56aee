# Swin-B: the Swin-T config with the Swin-B backbone.
_base_ = './upernet_swin-t_160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        type='swin_base',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/swin_base_in1k.pth')),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
