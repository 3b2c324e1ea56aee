# CSWin-B, ImageNet-22k weights: the CSWin-L 640 config with the CSWin-B backbone (drop path 0.6
# as in the official CSWin-B 512 config; the 640 recipe is not published). The IN-22k CSWin-B
# weights behind the reported number are not released (microsoft/CSWin-Transformer's README
# lists CSWin-B with ImageNet-1k weights only): checkpoints/cswin_base_in22k.pth has no
# official source.
_base_ = './upernet_cswin-l_160k_ade20k-640x640.py'

model = dict(
    backbone=dict(
        type='cswin_base',
        drop_path_rate=0.6,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/cswin_base_in22k.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
