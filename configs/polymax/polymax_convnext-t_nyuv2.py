# As polymax_swin-t_nyuv2.py with a ConvNeXt-T backbone (PolyMaX reports ConvNeXt-L).
_base_ = './polymax_swin-t_nyuv2.py'
model = dict(backbone=dict(_delete_=True, type='convnext_tiny', out_indices=(0, 1, 2, 3),
                           drop_path_rate=0.4))
