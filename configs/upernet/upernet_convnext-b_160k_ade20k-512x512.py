# ConvNeXt-B: the ConvNeXt-T config with the ConvNeXt-B backbone.
_base_ = './upernet_convnext-t_160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        type='convnext_base',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/convnext_base_in1k.pth')),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
optim_wrapper = dict(
    optimizer=dict(lr=0.0001, weight_decay=0.05),
    paramwise_cfg=dict(
        decay_rate=0.9,
        decay_type='stage_wise',
        num_layers=12))
