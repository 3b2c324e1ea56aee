# upernet: DiNAT-L backbone, ImageNet-22k weights (dinat family base for the 640x640 recipe;
# SHI-Labs upernet_dinat_large_640x640_160k_ade20k.py: kernel 7 as at 512, larger dilations,
# schedule 'ade20k_640' with stage maxima 20 / 10 / 5 / 2 instead of 16 / 8 / 4 / 2, drop path
# 0.3). That file inherits the repo's only ADE20K dataset file (512x512 crops, scale
# (2048, 512)); densekit trains at 640x640, as that file's name says.
_base_ = '../_base_/recipes/upernet_160k_ade20k-640x640.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='dinat_large',
        out_indices=(0, 1, 2, 3),
        dilations='ade20k_640',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/dinat_large_in22k.pth')),
    decode_head=dict(in_channels=[192, 384, 768, 1536]),
    auxiliary_head=dict(in_channels=768))
