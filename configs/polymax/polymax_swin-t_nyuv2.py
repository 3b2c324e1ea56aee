# PolyMaX-style depth head on Swin-T, NYUv2 Eigen split (same data and schedule as
# configs/depth/dpt_swin-t_nyuv2.py: 416x544 crops, 24 epochs AdamW one-cycle, flip-averaged
# testing). Initialise the backbone from ImageNet weights with
#   --cfg-options model.backbone.init_cfg.type=Pretrained model.backbone.init_cfg.checkpoint=PATH
_base_ = [
    '../_base_/models/polymax_depth.py', '../_base_/datasets/nyuv2.py',
    '../_base_/default_runtime_depth.py', '../_base_/schedules/depth_24e.py'
]
model = dict(
    backbone=dict(type='swin_tiny', out_indices=(0, 1, 2, 3), drop_path_rate=0.3),
    decode_head=dict(in_channels=[96, 192, 384, 768], max_depth=10.0),
    max_depth=10.0)
