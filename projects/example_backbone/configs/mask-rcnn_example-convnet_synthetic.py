# The detection quickstart with a user backbone plugged in through custom_imports.
_base_ = ['../../../configs/quickstart/mask-rcnn_r18_synthetic.py']

custom_imports = dict(imports=['densekit', 'projects.example_backbone.example_backbone'],
                      allow_failed_imports=False)

model = dict(
    backbone=dict(_delete_=True, type='ExampleConvNet', widths=(32, 64, 128, 256),
                  out_indices=(0, 1, 2, 3)),
    neck=dict(in_channels=[32, 64, 128, 256]))
