# TransNeXt-Base: the TransNeXt-T config with the Base backbone (official
# segmentation/upernet/configs/upernet_transnext_base_512x512_160k_ade20k_ss.py; drop path 0.7,
# fixed in the official dense class).
_base_ = './upernet_transnext-t_160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        type='transnext_base',
        drop_path_rate=0.7,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/transnext_base_224_1k.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
