# TransNeXt-Small: the TransNeXt-T config with the Small backbone (official
# segmentation/upernet/configs/upernet_transnext_small_512x512_160k_ade20k_ss.py; drop path 0.6,
# fixed in the official dense class).
_base_ = './upernet_transnext-t_160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        type='transnext_small',
        drop_path_rate=0.6,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/transnext_small_224_1k.pth')),
    decode_head=dict(in_channels=[72, 144, 288, 576]),
    auxiliary_head=dict(in_channels=288))
