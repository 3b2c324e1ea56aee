# kmax_deeplab: ResNet-50 (torchvision layout; the official R-50 is detectron2's with
# STRIDE_IN_1X1 False, SyncBN, FREEZE_AT 0), as bytedance/kmax-deeplab's
# configs/coco/panoptic_segmentation/kmax_r50.yaml.
_base_ = '../_base_/recipes/kmax-deeplab_150k_coco-panoptic.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='ResNet',
        depth=50,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        norm_eval=False,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')),
    panoptic_head=dict(in_channels=[256, 512, 1024, 2048]))
