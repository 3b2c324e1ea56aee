# mask2former: Swin-L backbone, window 12, ImageNet-22k 384 weights (swin family base for the
# 640x640 recipe; mmseg 1.2 mask2former_swin-l-in22k-384x384-pre_8xb2-160k_ade20k-640x640.py).
_base_ = '../_base_/recipes/mask2former_160k_ade20k-640x640.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='swin_large_w12',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/swin_large_w12_in22k.pth')),
    decode_head=dict(in_channels=[192, 384, 768, 1536]))
