# Runtime for depth configs (mmseg scope): the segmentation runtime with epoch-based logging and
# checkpoints (keeping the best abs_rel), and densekit's depth visualisation hook
# (`tools/test.py --show-dir D` writes labelled `ground truth | prediction` pngs into D).
_base_ = './default_runtime_seg.py'
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=True),
    checkpoint=dict(type='CheckpointHook', by_epoch=True, interval=2, max_keep_ckpts=3,
                    save_last=True, save_best='abs_rel', rule='less'),
    visualization=dict(_delete_=True, type='DepthVisualizationHook', draw=False, interval=50))
log_processor = dict(by_epoch=True)
auto_scale_lr = dict(enable=False, base_batch_size=16)
