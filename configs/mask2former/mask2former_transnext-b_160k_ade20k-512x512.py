# TransNeXt-Base: the TransNeXt-T config with the Base backbone (official
# segmentation/mask2former/configs/mask2former_transnext_base_160k_ade20k-512x512.py; drop path
# 0.6, fixed in the official Mask2Former dense class).
_base_ = './mask2former_transnext-t_160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        type='transnext_base',
        drop_path_rate=0.6,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/transnext_base_224_1k.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768]))
