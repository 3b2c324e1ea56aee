# upernet: Twins-SVT-S backbone (timm-wrapped, densekit/models/backbones/timm_seed.py).
_base_ = '../_base_/recipes/upernet_160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='twins_svt_small',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/twins_svt_small_in1k.pth')),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))
# Meituan-AutoML/Twins segmentation/configs/upernet_alt_gvt_s_512x512_160k_ade20k_swin_setting.py:
# AdamW lr 6e-5, weight decay 0.01, none on norms and on the position generators (pos_block)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'pos_block': dict(decay_mult=0.0)}))
