# mask rcnn: CrossFormer-S backbone (crossformer family base for this recipe). The official
# detection/configs/crossformer/mask_rcnn_crossformer_s_fpn_1x_coco.py: groups of 7x7, LDA
# intervals (8, 4, 2, 1), drop path 0.2, AdamW lr 1e-4 with weight decay 1e-4 (not 0.05) and no
# exemptions (densekit keeps its recipe's: none on norms), steps at epochs 8 and 11.
_base_ = '../_base_/recipes/mask-rcnn_1x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='crossformer_s',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/crossformer_s_in1k.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
optim_wrapper = dict(optimizer=dict(weight_decay=1e-4))
