# ConvNeXt-S: the ConvNeXt-T config with the ConvNeXt-S backbone.
_base_ = './upernet_convnext-t_160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        type='convnext_small',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/convnext_small_in1k.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
optim_wrapper = dict(
    optimizer=dict(lr=0.0001, weight_decay=0.05),
    paramwise_cfg=dict(
        decay_rate=0.9,
        decay_type='stage_wise',
        num_layers=12))
