# DiNAT-B: the DiNAT-T config with the DiNAT-B backbone.
_base_ = './cascade-mask-rcnn_dinat-t_fpn_giou-4conv1f_ms-3x_coco.py'

model = dict(
    backbone=dict(
        type='dinat_base',
        drop_path_rate=0.6,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/dinat_base_in1k.pth')),
    neck=dict(in_channels=[128, 256, 512, 1024]))
optim_wrapper = dict(
    optimizer=dict(lr=7.5e-05))
