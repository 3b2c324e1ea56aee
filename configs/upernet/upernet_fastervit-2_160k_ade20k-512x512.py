# upernet: FasterViT-2 backbone (fastervit family base for this recipe). FasterViT has no official
# segmentation release: the backbone is the official dense class (dino/models/dino/fastervit.py,
# carrier tokens of the 224 configuration, one BatchNorm per output, drop path 0.1 as in its
# dense configurations) under the recipe's Swin-style schedule (AdamW lr 6e-5, weight decay
# 0.01, none on norms; the official no-weight-decay keyword 'rpb' is in the recipe already).
_base_ = '../_base_/recipes/upernet_160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='fastervit_2',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/fastervit_2_224_1k.pth.tar')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
