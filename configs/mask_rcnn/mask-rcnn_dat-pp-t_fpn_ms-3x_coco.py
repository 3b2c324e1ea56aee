# mask rcnn: DAT-T++ backbone, 3x multi-scale (dat_pp family base for this recipe). The official
# LeapLabTHU/DAT-Detection configs/dat/mrcn_tiny_3x_4n_dp03_lr4.py: drop path 0.3, AdamW weight
# decay 0.05 with none on norms and `rpe_table`; lr 4e-4 at 2 images per GPU on "4n" (the GPU
# count is not stated) and mixed precision there; densekit keeps the recipe's lr 1e-4 at batch
# 16 and fp32.
_base_ = '../_base_/recipes/mask-rcnn_ms-3x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='dat_pp_tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/dat_pp_tiny_in1k_224.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'rpe_table': dict(decay_mult=0.0)}))
