# CSWin-S: the CSWin-T config with the CSWin-S backbone.
_base_ = './upernet_cswin-t_160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        type='cswin_small',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/cswin_small_in1k.pth')),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))
