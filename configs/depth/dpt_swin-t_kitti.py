# DPT-style decoder on Swin-T, KITTI Eigen split: KB crop 352x1216, 352x704 random crops, 24 epochs
# AdamW one-cycle, SILog loss, flip-averaged testing, metrics inside the Garg crop (1e-3..80 m).
_base_ = [
    '../_base_/models/dpt_depth.py', '../_base_/datasets/kitti_eigen.py',
    '../_base_/default_runtime_depth.py', '../_base_/schedules/depth_24e.py'
]
model = dict(
    backbone=dict(type='swin_tiny', out_indices=(0, 1, 2, 3), drop_path_rate=0.3),
    decode_head=dict(in_channels=[96, 192, 384, 768], max_depth=80.0),
    max_depth=80.0)
