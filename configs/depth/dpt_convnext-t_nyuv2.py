# As dpt_swin-t_nyuv2.py with a ConvNeXt-T backbone (drop path 0.4 as in ConvNeXt's dense configs).
_base_ = './dpt_swin-t_nyuv2.py'
model = dict(backbone=dict(_delete_=True, type='convnext_tiny', out_indices=(0, 1, 2, 3),
                           drop_path_rate=0.4))
