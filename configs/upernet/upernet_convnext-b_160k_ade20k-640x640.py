# ConvNeXt-B, ImageNet-22k weights: the ConvNeXt-L 640 config with the ConvNeXt-B backbone.
# facebookresearch/ConvNeXt upernet_convnext_base_640_160k_ade20k_{ms,ss}.py differ from the
# Large files only in the widths (and in apex fp16, which densekit configs do not set): drop path
# 0.4, lr 1e-4, weight decay 0.05, layer decay 0.9 stage-wise over 12 layers are inherited.
_base_ = './upernet_convnext-l_160k_ade20k-640x640.py'

model = dict(
    backbone=dict(
        type='convnext_base',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/convnext_base_in22k.pth')),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
