# upernet: UniRepLKNet-T backbone (unireplknet family base for this recipe), as AILab-CVC/UniRepLKNet's
# segmentation/configs/ade20k/upernet_unireplknet_t_512_160k_ade20k.py: drop path 0.2, AdamW lr 1e-4,
# weight decay 0.05 (none on biases and 1-d parameters), no layer decay (its decay_rate is 1),
# whole-image test.
_base_ = '../_base_/recipes/upernet_160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='unireplknet_t',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/unireplknet_t_in1k_224_acc83.21.pth')),
    decode_head=dict(in_channels=[80, 160, 320, 640]),
    auxiliary_head=dict(in_channels=320),
    test_cfg=dict(mode='whole'))
optim_wrapper = dict(
    optimizer=dict(lr=0.0001, weight_decay=0.05),
    paramwise_cfg=dict(bias_decay_mult=0.0, flat_decay_mult=0.0))
