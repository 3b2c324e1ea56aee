# mask rcnn: XCiT-S12/16 backbone (timm-wrapped, densekit/models/backbones/timm_seed.py) with the
# official simple pyramid (blocks 4 / 6 / 8 / 12 -> strides 4 / 8 / 16 / 32, 384 channels each).
_base_ = '../_base_/recipes/mask-rcnn_ms-3x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='xcit_small_12_p16',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.05,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/xcit_small_12_p16_in1k.pth')),
    neck=dict(in_channels=[384, 384, 384, 384]))
