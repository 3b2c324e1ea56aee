# upernet: TransNeXt-T backbone (transnext family base for this recipe). Backbone arguments of
# the official segmentation/upernet/configs/upernet_transnext_tiny_512x512_160k_ade20k_ss.py:
# position-bias tables built for 512 px and resized to each input, coordinates scaled for 224 px
# pre-training; drop path 0.4 (fixed in the official dense class).
_base_ = '../_base_/recipes/upernet_160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='transnext_tiny',
        out_indices=(0, 1, 2, 3),
        img_size=512,
        pretrain_size=224,
        is_extrapolation=False,
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/transnext_tiny_224_1k.pth')),
    decode_head=dict(in_channels=[72, 144, 288, 576]),
    auxiliary_head=dict(in_channels=288))
# The official optimizer: AdamW lr 6e-5, weight decay 0.05, none on norms, query embeddings,
# local position biases, the position-bias MLPs ('cpb') and temperatures.
optim_wrapper = dict(
    optimizer=dict(weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={
        'query_embedding': dict(decay_mult=0.0),
        'relative_pos_bias_local': dict(decay_mult=0.0),
        'cpb': dict(decay_mult=0.0),
        'temperature': dict(decay_mult=0.0),
    }))
