# DiNAT-L: the DiNAT-T config with the DiNAT-L backbone.
_base_ = './cascade-mask-rcnn_dinat-t_fpn_giou-4conv1f_ms-3x_coco.py'

model = dict(
    backbone=dict(
        type='dinat_large',
        drop_path_rate=0.6,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/dinat_large_in22k.pth')),
    neck=dict(in_channels=[192, 384, 768, 1536]))
optim_wrapper = dict(
    optimizer=dict(lr=7.5e-05))
