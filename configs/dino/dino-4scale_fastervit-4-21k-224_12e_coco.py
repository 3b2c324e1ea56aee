# dino: FasterViT-4 (ImageNet-21k, 224) backbone (fastervit family base for this recipe). Backbone
# of the official downstream/object_detection/dino/config/DINO/DINO_4scale_faster_vit_4_21k_224.py:
# build_fastervit('faster_vit_4_21k_224') (windows 7/7/14/7, no carrier tokens, drop path 0.1),
# the stride 8/16/32 maps (return_interm_indices [1, 2, 3]) each through its BatchNorm; its
# schedule (AdamW lr 1e-4, backbone x0.1, weight decay 1e-4, 12 epochs, step at 11, clip 0.1)
# is the recipe's.
_base_ = '../_base_/recipes/dino-4scale_12e_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='fastervit_4_21k_224',
        out_indices=(1, 2, 3),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/fastervit_4_21k_224_w14.pth.tar')),
    neck=dict(in_channels=[392, 784, 1568]))
