# mask2former: TransNeXt-T backbone (transnext family base for this recipe). Backbone arguments of
# the official segmentation/mask2former/configs/mask2former_transnext_tiny_160k_ade20k-512x512.py:
# position-bias tables built for 512 px and resized to each input, coordinates scaled for 224 px
# pre-training; drop path 0.3 (fixed in the official Mask2Former dense class). The official
# optimizer is the Mask2Former one with the backbone at lr x0.1 and no weight decay on biases,
# norms, query embeddings, local position biases, the position-bias MLPs ('cpb') and
# temperatures; densekit's recipe keeps weight decay on biases.
_base_ = '../_base_/recipes/mask2former_160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='transnext_tiny',
        out_indices=(0, 1, 2, 3),
        img_size=512,
        pretrain_size=224,
        is_extrapolation=False,
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/transnext_tiny_224_1k.pth')),
    decode_head=dict(in_channels=[72, 144, 288, 576]))
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={
        'query_embedding': dict(decay_mult=0.0),
        'relative_pos_bias_local': dict(decay_mult=0.0),
        'cpb': dict(decay_mult=0.0),
        'temperature': dict(decay_mult=0.0),
    }))
