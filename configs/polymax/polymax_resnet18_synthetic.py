# PolyMaX-style depth head on a timm ResNet-18 (random init), densekit's synthetic depth set
# (`python tools/make_depth_demo.py data/synthetic_depth` first); runs on a CPU.
_base_ = '../depth/dpt_resnet18_synthetic.py'
model = dict(
    decode_head=dict(_delete_=True, type='PolyMaXDepthHead', in_channels=[64, 128, 256, 512],
                     channels=64, num_queries=16, decoder_blocks=(1, 1, 1), num_heads=4,
                     ffn_channels=128, kmeans=True, activation='sigmoid', min_depth=1e-3,
                     max_depth=10.0, norm='gn'))
