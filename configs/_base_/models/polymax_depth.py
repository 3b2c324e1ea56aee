# PolyMaX-style depth head (densekit's design after Yang et al., WACV 2024; no official code): 64
# queries predict depth bins, k-means cross-attention on strides 32 / 16 / 8 (kMaX), depth = the
# per-pixel softmax mixture of the bins; trained with SILog (lambda 0.85, x10).
_base_ = './dpt_depth.py'
model = dict(
    decode_head=dict(
        _delete_=True,
        type='PolyMaXDepthHead',
        in_channels=[96, 192, 384, 768],
        channels=256,
        num_queries=64,
        decoder_blocks=(2, 2, 2),
        num_heads=8,
        ffn_channels=1024,
        kmeans=True,
        activation='sigmoid',
        min_depth=1e-3,
        max_depth=10.0,
        norm='gn'))
