# DiNAT-Mini: the DiNAT-T config with the DiNAT-Mini backbone.
_base_ = './upernet_dinat-t_160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        type='dinat_mini',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/dinat_mini_in1k.pth')),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))
