# mask rcnn: VAN-B0 backbone (van family base for this recipe). VAN publishes no detection config,
# so the AdamW recipe is used as it is. The stage LayerNorms are inside the backbone (no output
# norms).
_base_ = '../_base_/recipes/mask-rcnn_1x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='van_b0',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/van_b0_in1k.pth')),
    neck=dict(in_channels=[32, 64, 160, 256]))
