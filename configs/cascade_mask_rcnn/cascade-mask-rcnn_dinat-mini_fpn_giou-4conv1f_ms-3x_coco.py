# DiNAT-Mini: the DiNAT-T config with the DiNAT-Mini backbone.
_base_ = './cascade-mask-rcnn_dinat-t_fpn_giou-4conv1f_ms-3x_coco.py'

model = dict(
    backbone=dict(
        type='dinat_mini',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/dinat_mini_in1k.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))
