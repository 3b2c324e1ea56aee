# mask rcnn: FLatten-Swin-T backbone (flatten family base for this recipe). LeapLabTHU/
# FLatten-Transformer publishes classification code and configs only, so densekit's AdamW recipe
# is used as it is, with Swin-T's detection drop path (0.2). The backbone is the dense adaptation
# of densekit/models/backbones/flatten.py (global linear attention in stages 0-1 with
# interpolated position encodings, padded softmax windows in stages 2-3, one LayerNorm per output).
_base_ = '../_base_/recipes/mask-rcnn_1x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='flatten_swin_t',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/flatten_swin_t.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
