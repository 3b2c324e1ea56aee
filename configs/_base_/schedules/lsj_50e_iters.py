# Mask2Former COCO schedule: 50 epochs at batch 16 = 368750 iterations, lr x0.1 at 0.9 and 0.95
# of training, no warm-up; validation every 5000 iterations.
max_iters = 368750
interval = 5000
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=interval,
                 dynamic_intervals=[(max_iters // interval * interval + 1, max_iters)])
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = dict(type='MultiStepLR', begin=0, end=max_iters, by_epoch=False,
                       milestones=[327778, 355092], gamma=0.1)
