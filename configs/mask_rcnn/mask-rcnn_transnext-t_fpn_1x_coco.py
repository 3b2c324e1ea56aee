# mask rcnn: TransNeXt-T backbone (transnext family base for this recipe). Backbone arguments of
# the official detection/maskrcnn/configs/mask_rcnn_transnext_tiny_fpn_1x_coco.py: position-bias
# tables built for 800 px and resized to each input, coordinates scaled for 224 px pre-training;
# drop path 0.4 (fixed in the official dense class).
_base_ = '../_base_/recipes/mask-rcnn_1x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='transnext_tiny',
        out_indices=(0, 1, 2, 3),
        img_size=800,
        pretrain_size=224,
        is_extrapolation=False,
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/transnext_tiny_224_1k.pth')),
    neck=dict(in_channels=[72, 144, 288, 576]))
# The official optimizer: no weight decay on the query embeddings, local position biases, the
# position-bias MLPs ('cpb') and temperatures either.
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={
        'query_embedding': dict(decay_mult=0.0),
        'relative_pos_bias_local': dict(decay_mult=0.0),
        'cpb': dict(decay_mult=0.0),
        'temperature': dict(decay_mult=0.0),
    }))
