# ConvNeXt-XL: the ConvNeXt-L config with the ConvNeXt-XL backbone (official lr 8e-5).
_base_ = './upernet_convnext-l_160k_ade20k-640x640.py'

model = dict(
    backbone=dict(
        type='convnext_xlarge',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/convnext_xlarge_in22k.pth')),
    decode_head=dict(in_channels=[256, 512, 1024, 2048]),
    auxiliary_head=dict(in_channels=1024))
optim_wrapper = dict(
    optimizer=dict(lr=8e-05, weight_decay=0.05),
    paramwise_cfg=dict(
        decay_rate=0.9,
        decay_type='stage_wise',
        num_layers=12))
