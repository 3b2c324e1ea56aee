# mask2former: CSWin-T backbone (cswin family base for this recipe).
_base_ = '../_base_/recipes/mask2former_90k_cityscapes-512x1024.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='cswin_tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/cswin_tiny_in1k.pth')),
    decode_head=dict(in_channels=[64, 128, 256, 512]))
