# mask rcnn: SLAB-Swin-T backbone (slab family base for this recipe). The official
# detection/configs/swin/mask_rcnn_slab_swin_tiny_patch4_window7_mstrain_480-800_adamw_1x_coco.py:
# drop path 0.1, AdamW lr 1e-4 with weight decay 0.05 (none on norms and relative-position
# tables), steps at epochs 8 and 11, BatchNorms kept in eval mode (norm_eval); it trains with
# multi-scale 480-800 resizing and DETR-style crops and mixed precision, densekit's 1x recipe with
# its own pipeline in fp32.
_base_ = '../_base_/recipes/mask-rcnn_1x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='slab_swin_t',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/slab_swin_tiny.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
