# upernet: VAN-B0 backbone (van family base for this recipe), as VAN-Segmentation's
# configs/upernet/1k_pretrained/upernet_van_b0_512x512_160k_ade20k.py: drop path 0.1, AdamW
# lr 6e-5, weight decay 0.01, none on norms (the recipe's optimizer).
_base_ = '../_base_/recipes/upernet_160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='van_b0',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/van_b0_in1k.pth')),
    decode_head=dict(in_channels=[32, 64, 160, 256]),
    auxiliary_head=dict(in_channels=160))
