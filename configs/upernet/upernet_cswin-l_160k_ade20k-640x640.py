# upernet: CSWin-L backbone, ImageNet-22k weights (cswin family base for the 640x640 recipe).
# microsoft/CSWin-Transformer's README reports this model but publishes no config for it
# (segmentation/configs has T/S/B at 512, segmentation/README.md no 640 entry), so its drop path,
# stripe widths and optimizer are not published: this is the official CSWin-B 512 recipe (drop
# path 0.6, lr 6e-5, weight decay 0.01) with the default stripe widths 1/2/7/7 of the released
# 224 IN-22k weights (cswin_large_22k_224.pth) on the 640 pipeline.
_base_ = '../_base_/recipes/upernet_160k_ade20k-640x640.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='cswin_large',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.6,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/cswin_large_in22k.pth')),
    decode_head=dict(in_channels=[144, 288, 576, 1152]),
    auxiliary_head=dict(in_channels=576))
