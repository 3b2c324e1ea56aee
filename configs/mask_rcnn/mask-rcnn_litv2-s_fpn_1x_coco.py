# mask rcnn: LITv2-S backbone (litv2 family base for this recipe). The official
# detection/configs/litv2/mask_rcnn_litv2_s_fpn_1x_coco.py: alpha 0.9, HiLo windows (0, 0, 2, 1),
# drop path 0.2, AdamW lr 2e-4 with weight decay 1e-4 and none on norms, steps at epochs 8 and
# 11; it trains with mixed precision, densekit's recipe in fp32.
_base_ = '../_base_/recipes/mask-rcnn_1x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='litv2_s',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/litv2_s.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
optim_wrapper = dict(optimizer=dict(lr=2e-4, weight_decay=1e-4))
