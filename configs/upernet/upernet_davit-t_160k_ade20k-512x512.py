# upernet: DaViT-T backbone (timm-wrapped, densekit/models/backbones/timm_seed.py).
_base_ = '../_base_/recipes/upernet_160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='davit_tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/davit_tiny_in1k.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
# dingmyu/davit mmseg/configs/upernet_davit_512x512_160k_ade20k.py: AdamW lr 6e-5, weight decay
# 0.01 on every parameter (norms included)
optim_wrapper = dict(paramwise_cfg=dict(norm_decay_mult=1.0))
