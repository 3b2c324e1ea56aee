# CSWin-B: the CSWin-T config with the CSWin-B backbone.
_base_ = './upernet_cswin-t_160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        type='cswin_base',
        drop_path_rate=0.6,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/cswin_base_in1k.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
