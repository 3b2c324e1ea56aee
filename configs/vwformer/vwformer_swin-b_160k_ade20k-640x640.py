# vwformer: Swin-B (window 12, ImageNet-22k 384 weights), as yan-hao-tian/VW's mmsegmentation-
# custom/configs/swin/vw_swin_base_patch4_window12_640x640_160k_ade20k_pretrain_384x384_22K.py:
# drop path 0.3, AdamW lr 1e-4, weight decay 0.05 (none on biases and 1-d parameters), layer-wise
# decay 0.85 over 12 layers (two stage-2 blocks per id, as the official constructor), whole-image
# test on sides resized to multiples of 64.
_base_ = '../_base_/recipes/vwformer_160k_ade20k-640x640.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='swin_base_w12',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/swin_base_w12_in22k.pth')),
    decode_head=dict(in_channels=[128, 256, 512, 1024]))
optim_wrapper = dict(
    paramwise_cfg=dict(decay_rate=0.85, decay_type='layer_wise', num_layers=12))
