# HorNet-T (GF): the HorNet-T (7x7) config with global-local filters in stages 2 and 3, of the
# ImageNet-224 sizes 14x8 and 7x4 as the official COCO config
# (cascade_mask_rcnn_hornet_tiny_gf_3x_coco_in1k.py).
_base_ = './cascade-mask-rcnn_hornet-t-7x7_fpn_giou-4conv1f_ms-3x_coco.py'

model = dict(
    backbone=dict(
        type='hornet_tiny_gf',
        gf_sizes=(None, None, (14, 8), (7, 4)),
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/hornet_tiny_gf_in1k.pth')))
