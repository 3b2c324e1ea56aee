# upernet: CrossFormer-S backbone (crossformer family base for this recipe). The official
# segmentation/configs/crossformer/upernet_crossformer_s_ade20k.py: groups of 7x7, LDA intervals
# (8, 4, 2, 1), drop path 0.2, AdamW lr 6e-5 / wd 0.01 with no decay on norms, poly schedule
# after 1500 warm-up iterations (the recipe's).
_base_ = '../_base_/recipes/upernet_160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='crossformer_s',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/crossformer_s_in1k.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
