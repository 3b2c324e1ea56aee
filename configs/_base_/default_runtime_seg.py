# Default runtime for semantic segmentation configs (mmseg scope).
default_scope = 'mmseg'
custom_imports = dict(imports=['densekit'], allow_failed_imports=False)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=16000, max_keep_ckpts=3,
                    save_last=True),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))

# RNGStateHook restores RNG states on resume (bit-identical single-process resume);
# NumClassesCheckHook refuses heads whose num_classes differ from the dataset's classes before
# training / testing starts; BackboneCheckpointHook converts an official / timm / mmdet-zoo
# backbone in a `load_from` (or tools/test.py) checkpoint to densekit's keys. tools/train.py and
# tools/test.py add any of the three that a config's own custom_hooks lacks (densekit_hooks = False
# opts out).
custom_hooks = [dict(type='RNGStateHook'), dict(type='NumClassesCheckHook'),
                dict(type='BackboneCheckpointHook')]

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)

log_level = 'INFO'
load_from = None
resume = False
auto_scale_lr = dict(enable=False, base_batch_size=16)
