# pem: ConvNeXt-T backbone. PEM publishes ResNet-50 and STDC results only; this is its ADE20K
# recipe with densekit's ConvNeXt-T (drop path 0.4, as the Mask2Former ConvNeXt-T config).
_base_ = '../_base_/recipes/pem_160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='convnext_tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/convnext_tiny_in1k.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768]))
