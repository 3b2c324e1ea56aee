# PEM, ADE20K semantic segmentation, 512x512 crops, 160k iterations at batch 32 (the official
# 8 GPUs x 4 here as 8 x 4): Mask2Former's training pipeline (shorter side 256..1024, crop, flip,
# photometric distortion), AdamW lr 4e-4, weight decay 0.05 (none on norms and embeddings),
# backbone lr x0.1, full-model gradient clipping at 0.01, cosine decay to 1e-6 without warm-up
# (detectron2's WarmupCosineLR with WARMUP_ITERS 0). The official trains with AMP; densekit fp32.
_base_ = [
    '../models/pem_semantic.py', '../datasets/ade20k_512x512.py',
    '../schedules/schedule_160k.py', '../default_runtime_seg.py', './mask2former_optim.py',
]
crop_size = (512, 512)
model = dict(data_preprocessor=dict(size=crop_size))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomChoiceResize', scales=[int(512 * x * 0.1) for x in range(5, 21)],
         resize_type='ResizeShortestEdge', max_size=2048),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=1.0),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(batch_size=4, dataset=dict(pipeline=train_pipeline))
optim_wrapper = dict(optimizer=dict(lr=4e-4))
param_scheduler = [
    dict(type='CosineAnnealingLR', eta_min=1e-6, begin=0, end=160000, T_max=160000, by_epoch=False),
]
train_cfg = dict(val_interval=5000)
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=5000, save_best='mIoU'))
