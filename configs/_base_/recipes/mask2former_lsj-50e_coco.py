# Mask2Former, COCO instance segmentation, LSJ 1024, 50 epochs (368750 iterations at batch 16).
_base_ = [
    '../models/mask2former_instance.py', '../datasets/coco_instance_lsj.py',
    '../schedules/lsj_50e_iters.py', '../default_runtime_det.py', './mask2former_optim.py',
]
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', by_epoch=False, save_last=True, max_keep_ckpts=3,
                    interval=5000))
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=False)
