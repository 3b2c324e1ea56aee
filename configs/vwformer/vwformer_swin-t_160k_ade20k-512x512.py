# vwformer: Swin-T backbone. The official repo publishes VWFormer Swin configs for Swin-B / L
# (640x640, ImageNet-22k) only; this is their recipe (yan-hao-tian/VW, mmsegmentation-custom/
# configs/swin/vw_swin_base_patch4_window12_640x640_160k_ade20k_pretrain_384x384_22K.py: AdamW
# lr 1e-4, weight decay 0.05, layer-wise decay 0.85, two stage-2 blocks per layer id) on the
# 512x512 pipeline with Swin-T (drop path 0.3 of the official vw_swin.py base; 6 stage-2 blocks
# -> 3 ids, num_layers 6).
_base_ = '../_base_/recipes/vwformer_160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='swin_tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/swin_tiny_in1k.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768]))
optim_wrapper = dict(
    paramwise_cfg=dict(decay_rate=0.85, decay_type='layer_wise', num_layers=6))
