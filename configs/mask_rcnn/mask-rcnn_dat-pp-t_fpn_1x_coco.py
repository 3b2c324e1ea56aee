# mask rcnn: DAT-T++ backbone (dat_pp family base for this recipe). The official
# LeapLabTHU/DAT-Detection configs/dat/mrcn_tiny_1x_4n_dp00_lr4.py: the DAT-T++ architecture
# (bias tables sized for 224 px pre-training), drop path 0.0, AdamW weight decay 0.05 with none on
# norms and the deformable attention's `rpe_table`. It trains with lr 4e-4 at 2 images per GPU on
# "4n" (the GPU count is not stated), DETR-style multi-scale + crop augmentation and mixed
# precision; densekit keeps the recipe's lr 1e-4 at batch 16, single-scale 1x data, fp32.
_base_ = '../_base_/recipes/mask-rcnn_1x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='dat_pp_tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.0,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/dat_pp_tiny_in1k_224.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'rpe_table': dict(decay_mult=0.0)}))
