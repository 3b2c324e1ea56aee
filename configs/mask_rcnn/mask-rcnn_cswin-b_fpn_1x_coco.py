# CSWin-B: the CSWin-T config with the CSWin-B backbone.
_base_ = './mask-rcnn_cswin-t_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        type='cswin_base',
        drop_path_rate=0.6,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/cswin_base_in1k.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
