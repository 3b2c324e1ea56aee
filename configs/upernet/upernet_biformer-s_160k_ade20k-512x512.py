# upernet: BiFormer-S backbone (biformer family base for this recipe). The official
# semantic_segmentation/configs/ade20k/upernet.biformer_small.py: 8 x 8 routing regions
# (n_win=8, for 512 crops), drop path 0.3, AdamW lr 6e-5 / wd 0.01.
_base_ = '../_base_/recipes/upernet_160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='biformer_small',
        n_win=8,
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/biformer_small_in1k.pth')),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))
