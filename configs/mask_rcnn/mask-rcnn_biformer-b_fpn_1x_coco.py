# BiFormer-B: the BiFormer-S config with the BiFormer-B backbone (official
# maskrcnn.1x.biformer_base.py: drop path 0.3).
_base_ = './mask-rcnn_biformer-s_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        type='biformer_base',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/biformer_base_in1k.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
