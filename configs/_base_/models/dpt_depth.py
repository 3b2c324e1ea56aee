# DPT-style depth decoder (reassemble + fusion, Ranftl et al. 2021) on a hierarchical backbone
# (strides 4..32), trained with SILog (lambda 0.85, x10; BTS / AdaBins); output max_depth*sigmoid.
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=0,  # padded depth is 0 = invalid
    size_divisor=32,
    test_cfg=dict(size_divisor=32))
model = dict(
    type='DenseKitDepthEstimator',
    data_preprocessor=data_preprocessor,
    backbone=dict(type='swin_tiny', out_indices=(0, 1, 2, 3), drop_path_rate=0.3),
    decode_head=dict(
        type='DPTDepthHead',
        in_channels=[96, 192, 384, 768],
        channels=256,
        activation='sigmoid',
        min_depth=1e-3,
        max_depth=10.0),
    losses=[dict(type='DenseKitSILogLoss', variance_focus=0.85, scale=10.0)],
    min_depth=1e-3,
    max_depth=10.0,
    flip_test=True)
