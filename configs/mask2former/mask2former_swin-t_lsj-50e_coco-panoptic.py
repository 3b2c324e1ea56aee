# mask2former: Swin-T backbone (swin family base for this recipe).
_base_ = '../_base_/recipes/mask2former_lsj-50e_coco-panoptic.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='swin_tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/swin_tiny_in1k.pth')),
    panoptic_head=dict(in_channels=[96, 192, 384, 768]))
