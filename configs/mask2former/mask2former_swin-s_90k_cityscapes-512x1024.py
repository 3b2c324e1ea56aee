# Swin-S: the Swin-T config with the Swin-S backbone.
_base_ = './mask2former_swin-t_90k_cityscapes-512x1024.py'

model = dict(
    backbone=dict(
        type='swin_small',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/swin_small_in1k.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768]))
