# CrossFormer-B: the CrossFormer-S config with the CrossFormer-B backbone (the official
# mask_rcnn_crossformer_b_fpn_1x_coco.py: drop path 0.3).
_base_ = './mask-rcnn_crossformer-s_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        type='crossformer_b',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/crossformer_b_in1k.pth')))
