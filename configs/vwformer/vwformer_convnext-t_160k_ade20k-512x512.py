# vwformer: ConvNeXt-T backbone, as yan-hao-tian/VW's mmsegmentation-custom/configs/convnext/
# vw_convnext_tiny_fp16_512x512_160k_ade20k.py: drop path 0.4, AdamW lr 1e-4, weight decay 0.05,
# stage-wise decay 0.9 over 6 layers, whole-image test (the official trains in fp16; densekit fp32).
_base_ = '../_base_/recipes/vwformer_160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='convnext_tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/convnext_tiny_in1k.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768]))
optim_wrapper = dict(
    paramwise_cfg=dict(decay_rate=0.9, decay_type='stage_wise', num_layers=6))
