# CSWin-S: the CSWin-T config with the CSWin-S backbone.
_base_ = './mask-rcnn_cswin-t_fpn_ms-3x_coco.py'

model = dict(
    backbone=dict(
        type='cswin_small',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/cswin_small_in1k.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))
