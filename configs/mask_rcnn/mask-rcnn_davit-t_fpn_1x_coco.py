# mask rcnn: DaViT-T backbone (timm-wrapped, densekit/models/backbones/timm_seed.py).
_base_ = '../_base_/recipes/mask-rcnn_1x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='davit_tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/davit_tiny_in1k.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
# dingmyu/davit mmdet/configs/davit_maskrcnn_1x_coco.py: AdamW lr 1e-4, weight decay 0.05 on
# every parameter (norms included)
optim_wrapper = dict(paramwise_cfg=dict(norm_decay_mult=1.0))
