# 160k iterations (ADE20K): 1500-iteration linear warm-up from 1e-6, then linear (poly, power
# 1.0) decay to 0, as in the Swin / ConvNeXt / NAT UPerNet recipes. Validation every 16k.
max_iters = 160000
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=16000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=max_iters, by_epoch=False),
]
