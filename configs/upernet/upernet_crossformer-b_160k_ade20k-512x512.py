# CrossFormer-B: the CrossFormer-S config with the CrossFormer-B backbone (the official
# upernet_crossformer_b_ade20k.py: drop path 0.3).
_base_ = './upernet_crossformer-s_160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        type='crossformer_b',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/crossformer_b_in1k.pth')))
