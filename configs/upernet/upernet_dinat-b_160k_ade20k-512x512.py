# DiNAT-B: the DiNAT-T config with the DiNAT-B backbone.
_base_ = './upernet_dinat-t_160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        type='dinat_base',
        drop_path_rate=0.5,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/dinat_base_in1k.pth')),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
