# mask2former: HaloNet-26t backbone (halonet family base for this recipe).
_base_ = '../_base_/recipes/mask2former_90k_cityscapes-512x1024.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='halonet26t',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/halonet26t_in1k.pth')),
    decode_head=dict(in_channels=[256, 512, 1024, 2048]))
