# upernet: Swin-L backbone, window 12, ImageNet-22k 384 weights (swin family base for the
# 640x640 recipe). No official Swin-L UPerNet config is published (the Swin segmentation repo
# has T/S/B at 512, mmseg 1.2 Swin-L at 512 only): this is the Swin-B recipe (drop path 0.3,
# lr 6e-5, weight decay 0.01) with mmseg's Swin-L window-12 backbone on the 640 pipeline.
_base_ = '../_base_/recipes/upernet_160k_ade20k-640x640.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='swin_large_w12',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/swin_large_w12_in22k.pth')),
    decode_head=dict(in_channels=[192, 384, 768, 1536]),
    auxiliary_head=dict(in_channels=768))
