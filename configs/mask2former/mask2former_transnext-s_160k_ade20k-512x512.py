# TransNeXt-Small: the TransNeXt-T config with the Small backbone (official
# segmentation/mask2former/configs/mask2former_transnext_small_160k_ade20k-512x512.py; drop path
# 0.5, fixed in the official Mask2Former dense class).
_base_ = './mask2former_transnext-t_160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        type='transnext_small',
        drop_path_rate=0.5,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/transnext_small_224_1k.pth')),
    decode_head=dict(in_channels=[72, 144, 288, 576]))
