# upernet: ConvNeXt-L backbone, ImageNet-22k weights (convnext family base for the 640x640
# recipe; facebookresearch/ConvNeXt upernet_convnext_large_640_160k_ade20k_{ms,ss}.py).
_base_ = '../_base_/recipes/upernet_160k_ade20k-640x640.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='convnext_large',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/convnext_large_in22k.pth')),
    decode_head=dict(in_channels=[192, 384, 768, 1536]),
    auxiliary_head=dict(in_channels=768),
    test_cfg=dict(mode='slide', crop_size=(640, 640), stride=(426, 426)))
optim_wrapper = dict(
    optimizer=dict(lr=0.0001, weight_decay=0.05),
    paramwise_cfg=dict(
        decay_rate=0.9,
        decay_type='stage_wise',
        num_layers=12,
        bias_decay_mult=0.0,
        flat_decay_mult=0.0))
