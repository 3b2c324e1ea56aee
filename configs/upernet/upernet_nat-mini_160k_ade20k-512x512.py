# NAT-Mini: the NAT-T config with the NAT-Mini backbone.
_base_ = './upernet_nat-t_160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        type='nat_mini',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/nat_mini_in1k.pth')),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))
