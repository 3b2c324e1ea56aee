# mask rcnn: BiFormer-S backbone (biformer family base for this recipe). The official
# object_detection/configs/coco/maskrcnn.1x.biformer_small.py: 16 x 16 routing regions
# (n_win=16, inputs padded to multiples), drop path 0.2, AdamW lr 1e-4 / wd 0.05.
_base_ = '../_base_/recipes/mask-rcnn_1x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='biformer_small',
        n_win=16,
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/biformer_small_in1k.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))
