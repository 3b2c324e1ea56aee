# mask rcnn: HorNet-S (7x7) backbone, the size of raoyongming/HorNet's only Mask R-CNN 1x config
# (object_detection/configs/horfpn/fpn_mask_rcnn_hornet_small_7x7_1x_coco_in1k.py, the plain-FPN
# baseline of the paper's HorFPN study): drop path 0.6, AdamW lr 1e-4, weight decay 0.05,
# layer-wise decay 0.95 over 6 layers, no weight decay on biases and 1-d parameters. The layer ids
# are densekit's (stage 2 in three equal groups); the official constructor's ids assume 12 layers.
_base_ = '../_base_/recipes/mask-rcnn_1x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='hornet_small_7x7',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.6,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/hornet_small_7x7_in1k.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
optim_wrapper = dict(
    optimizer=dict(lr=0.0001, weight_decay=0.05),
    paramwise_cfg=dict(
        decay_rate=0.95,
        decay_type='layer_wise',
        num_layers=6,
        bias_decay_mult=0.0,
        flat_decay_mult=0.0))
