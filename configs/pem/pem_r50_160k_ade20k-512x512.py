# pem: ResNet-50 (torchvision layout, the official detectron2 R-50 with STRIDE_IN_1X1 False), as
# NiccoloCavagnero/PEM's configs/ade20k/semantic-segmentation/pem_R50_bs32_160k.yaml.
_base_ = '../_base_/recipes/pem_160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='ResNet',
        depth=50,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        dilations=(1, 1, 1, 1),
        strides=(1, 2, 2, 2),
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        norm_eval=False,
        style='pytorch',
        contract_dilation=True,
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')),
    decode_head=dict(in_channels=[256, 512, 1024, 2048]))
