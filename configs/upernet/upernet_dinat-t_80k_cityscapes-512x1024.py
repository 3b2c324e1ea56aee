# upernet: DiNAT-T backbone (dinat family base for this recipe).
_base_ = '../_base_/recipes/upernet_80k_cityscapes-512x1024.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='dinat_tiny',
        out_indices=(0, 1, 2, 3),
        dilations='ade20k',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/dinat_tiny_in1k.pth')),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))
