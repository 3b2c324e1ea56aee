# Swin-B, window 12, ImageNet-22k 384 weights: the Swin-L 640 config with the Swin-B backbone.
# microsoft/Swin-Transformer's README reports this model but no config for it is published (the
# Swin segmentation repo has T/S/B at 512 with ImageNet-1k weights; mmseg 1.2 has IN-22k Swin-B
# at 512 only), so the window and the pretraining resolution are not published: window 12 with
# the 384 IN-22k weights is densekit's choice, as for Swin-L. Drop path 0.3, lr 6e-5 and weight
# decay 0.01 are the official Swin-B 512 values.
_base_ = './upernet_swin-l_160k_ade20k-640x640.py'

model = dict(
    backbone=dict(
        type='swin_base_w12',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/swin_base_w12_in22k.pth')),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
