# DiNAT-S: the DiNAT-T config with the DiNAT-S backbone.
_base_ = './upernet_dinat-t_160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        type='dinat_small',
        drop_path_rate=0.5,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/dinat_small_in1k.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
