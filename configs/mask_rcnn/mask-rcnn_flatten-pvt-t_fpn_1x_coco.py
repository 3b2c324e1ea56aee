# mask rcnn: FLatten-PVT-T backbone (flatten family, PVT host, base for this recipe). No official
# dense config exists; PVT v1's own Mask R-CNN 1x setting (drop path 0.1, AdamW lr 1e-4, weight
# decay 1e-4) with its interpolated position embeddings, outputs without norm.
_base_ = '../_base_/recipes/mask-rcnn_1x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='flatten_pvt_t',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/flatten_pvt_t.pth')),
    neck=dict(in_channels=[64, 128, 320, 512]))
optim_wrapper = dict(optimizer=dict(lr=1e-4, weight_decay=1e-4))
