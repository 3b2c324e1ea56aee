# As fpn_swin-t_kitti.py with a ConvNeXt-T backbone.
_base_ = './fpn_swin-t_kitti.py'
model = dict(backbone=dict(_delete_=True, type='convnext_tiny', out_indices=(0, 1, 2, 3),
                           drop_path_rate=0.4))
