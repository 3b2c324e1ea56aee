# upernet: HorNet-T (7x7) backbone (hornet family base for this recipe), as raoyongming/HorNet's
# semantic_segmentation/configs/hornet/upernet_hornet_tiny_7x7_512_160k_ade20k.py: drop path 0.4,
# AdamW lr 1e-4, weight decay 0.05, stage-wise decay 0.9 over 6 layers, sliding-window test.
_base_ = '../_base_/recipes/upernet_160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='hornet_tiny_7x7',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/hornet_tiny_7x7_in1k.pth')),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))
optim_wrapper = dict(
    optimizer=dict(lr=0.0001, weight_decay=0.05),
    paramwise_cfg=dict(
        decay_rate=0.9,
        decay_type='stage_wise',
        num_layers=6,
        bias_decay_mult=0.0,
        flat_decay_mult=0.0))
