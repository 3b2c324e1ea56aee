# upernet: UniRepLKNet-S backbone (unireplknet family base for this recipe), as AILab-CVC/UniRepLKNet's
# segmentation/configs/ade20k/upernet_unireplknet_s_512_160k_ade20k.py: drop path 0.3, AdamW lr 1e-4,
# weight decay 0.05 (none on biases and 1-d parameters), layer-wise decay 0.9 over 12 layers (three
# stage-2 blocks per id, as the official constructor), whole-image test.
_base_ = '../_base_/recipes/upernet_160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='unireplknet_s',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/unireplknet_s_in1k_224_acc83.91.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384),
    test_cfg=dict(mode='whole'))
optim_wrapper = dict(
    optimizer=dict(lr=0.0001, weight_decay=0.05),
    paramwise_cfg=dict(
        decay_rate=0.9,
        decay_type='layer_wise',
        num_layers=12,
        bias_decay_mult=0.0,
        flat_decay_mult=0.0))
