# LITv2-M: the LITv2-S config with the LITv2-M backbone (the official
# mask_rcnn_litv2_m_fpn_1x_coco.py: drop path 0.2).
_base_ = './mask-rcnn_litv2-s_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        type='litv2_m',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/litv2_m.pth')))
