# DAT-S++: the DAT-T++ 1x config with the DAT-S++ backbone (official LeapLabTHU/DAT-Detection
# configs/dat/mrcn_small_1x_4n_dp01_lr4.py: drop path 0.1).
_base_ = './mask-rcnn_dat-pp-t_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        type='dat_pp_small',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/dat_pp_small_in1k_224.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
