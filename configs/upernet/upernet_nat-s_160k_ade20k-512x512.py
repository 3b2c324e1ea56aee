# NAT-S: the NAT-T config with the NAT-S backbone.
_base_ = './upernet_nat-t_160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        type='nat_small',
        drop_path_rate=0.5,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/nat_small_in1k.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
