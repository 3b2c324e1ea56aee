# HorNet-T (GF): the HorNet-T (7x7) config with global-local filters of the sizes of the official
# ADE20K config (upernet_hornet_tiny_gf_512_160k_ade20k.py: 24x13 and 12x7; the ImageNet-224
# filters of the checkpoint are resized on loading) and its gradient clipping (max norm 1).
_base_ = './upernet_hornet-t-7x7_160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        type='hornet_tiny_gf',
        gf_sizes=(None, None, (24, 13), (12, 7)),
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/hornet_tiny_gf_in1k.pth')))
optim_wrapper = dict(clip_grad=dict(max_norm=1.0, norm_type=2))
