# Light FPN depth decoder (FPN + semantic-FPN merge at stride 4) on a hierarchical backbone,
# trained with SILog (lambda 0.85, x10); output max_depth*sigmoid.
_base_ = './dpt_depth.py'
model = dict(
    decode_head=dict(
        _delete_=True,
        type='FPNDepthHead',
        in_channels=[96, 192, 384, 768],
        channels=256,
        merge_channels=128,
        activation='sigmoid',
        min_depth=1e-3,
        max_depth=10.0,
        norm='gn'))
