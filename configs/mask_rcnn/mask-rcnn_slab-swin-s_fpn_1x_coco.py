# mask rcnn: SLAB-Swin-S backbone (the official mask_rcnn_slab_swin_small_..._1x_coco.py: drop
# path 0.2).
_base_ = './mask-rcnn_slab-swin-t_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        type='slab_swin_s',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/slab_swin_small.pth')))
