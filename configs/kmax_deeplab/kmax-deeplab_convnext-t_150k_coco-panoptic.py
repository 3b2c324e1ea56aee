# kmax_deeplab: ConvNeXt-T backbone, as bytedance/kmax-deeplab's
# configs/coco/panoptic_segmentation/kmax_convnext_tiny.yaml (drop path 0.3). The official starts
# from ImageNet-22k (384) weights; the checkpoint named here is densekit's ImageNet-1k one.
_base_ = '../_base_/recipes/kmax-deeplab_150k_coco-panoptic.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='convnext_tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/convnext_tiny_in1k.pth')),
    panoptic_head=dict(in_channels=[96, 192, 384, 768]))
