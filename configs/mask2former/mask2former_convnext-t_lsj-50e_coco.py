# mask2former: ConvNeXt-T backbone (convnext family base for this recipe).
_base_ = '../_base_/recipes/mask2former_lsj-50e_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='convnext_tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/convnext_tiny_in1k.pth')),
    panoptic_head=dict(in_channels=[96, 192, 384, 768]))
