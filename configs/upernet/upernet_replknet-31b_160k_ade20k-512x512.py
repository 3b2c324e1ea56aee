# upernet: RepLKNet-31B backbone (replknet family base for this recipe), as DingXiaoH/RepLKNet-pytorch's
# segmentation/configs/RepLKNet-31B_1Kpretrain_upernet_160k_ade20k_512.py: drop path 0.5, AdamW lr 2e-4,
# weight decay 0.05 (none on norms), whole-image test. The official run trained 40k iterations at a
# global batch of 128; this recipe keeps mmseg's 160k at 16 (the paper's stated schedule).
_base_ = '../_base_/recipes/upernet_160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='replknet_31b',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.5,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/RepLKNet-31B_ImageNet-1K_224.pth')),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512),
    test_cfg=dict(mode='whole'))
optim_wrapper = dict(optimizer=dict(lr=0.0002, weight_decay=0.05))
