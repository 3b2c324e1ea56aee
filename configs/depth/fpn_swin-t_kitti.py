# Light FPN depth decoder on Swin-T, KITTI Eigen split (same data and schedule as dpt_swin-t_kitti.py).
_base_ = [
    '../_base_/models/fpn_depth.py', '../_base_/datasets/kitti_eigen.py',
    '../_base_/default_runtime_depth.py', '../_base_/schedules/depth_24e.py'
]
model = dict(
    backbone=dict(type='swin_tiny', out_indices=(0, 1, 2, 3), drop_path_rate=0.3),
    decode_head=dict(in_channels=[96, 192, 384, 768], max_depth=80.0),
    max_depth=80.0)
