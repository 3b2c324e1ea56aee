"""A tiny mmseg setup (random ADE-layout data, resnet-ish timm backbone) for the tool tests."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def make_tiny_ade(root: Path, n: int = 8, size: int = 32, seed: int = 0) -> Path:
    """Writes ``n`` random image / label pairs in ADE20K's folder layout under ``root``."""
    import cv2
    rng = np.random.default_rng(seed)
    for split in ('training', 'validation'):
        (root / 'images' / split).mkdir(parents=True, exist_ok=True)
        (root / 'annotations' / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            label = np.zeros((size, size), np.uint8)
            label[:, : size // 2] = 1 + (i % 3)
            label[:, size // 2:] = 2 + (i % 2)
            img = (label[..., None] * 60 + rng.integers(0, 30, (size, size, 3))).astype(np.uint8)
            cv2.imwrite(str(root / 'images' / split / f'{i:03d}.jpg'), img)
            cv2.imwrite(str(root / 'annotations' / split / f'{i:03d}.png'), label)
    return root


CONFIG = '''
_base_ = ['{base}']
custom_imports = dict(imports=['densekit', 'tiny_hooks'], allow_failed_imports=False)
randomness = dict(seed=0, deterministic=False)
crop = (32, 32)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0,
                           seg_pad_val=255, size=crop),
    backbone=dict(type='TimmBackbone', model_name='resnet10t', out_indices=(1, 2)),
    decode_head=dict(type='FCNHead', in_channels=128, in_index=1, channels=16, num_convs=1,
                     concat_input=False, num_classes=4, norm_cfg=dict(type='BN'),
                     align_corners=False,
                     loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(), test_cfg=dict(mode='whole'))
pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')]
# random augmentation draws from numpy's global generator in the main process (num_workers=0),
# so a resume is only bit-identical if the restored RNG state survives the skipped batches
train_pipeline = pipeline[:2] + [dict(type='RandomFlip', prob=0.5)] + pipeline[2:]
dataset = dict(type='BaseSegDataset', data_root='{data}', reduce_zero_label=True, pipeline=pipeline,
               img_suffix='.jpg', seg_map_suffix='.png',
               metainfo=dict(classes=('a', 'b', 'c', 'd'),
                             palette=[[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]))
train_dataloader = dict(batch_size=2, num_workers=0,
                        sampler=dict(type='InfiniteSampler', shuffle=True),
                        dataset=dict(**dict(dataset, pipeline=train_pipeline), data_prefix=dict(
                            img_path='images/training', seg_map_path='annotations/training')))
val_dataloader = dict(batch_size=1, num_workers=0,
                      sampler=dict(type='DefaultSampler', shuffle=False),
                      dataset=dict(**dataset, data_prefix=dict(
                          img_path='images/validation', seg_map_path='annotations/validation')))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.01))
param_scheduler = [dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=4)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=8, val_interval=100)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(by_epoch=False, interval=2, max_keep_ckpts=10),
                     visualization=dict(type='SegVisualizationHook', draw=False))
custom_hooks = [dict(type='RNGStateHook'), dict(type='DumpWeightsHook'),
                dict(type='KillAfterIterHook')]
'''


def write_config(tmp: Path, data: Path, extra: str = '') -> Path:
    cfg = tmp / 'tiny_seg.py'
    base = REPO / 'configs' / '_base_' / 'default_runtime_seg.py'
    cfg.write_text(CONFIG.format(base=base, data=data) + extra)
    return cfg


def env_with_hooks() -> dict:
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parent)
    env['PYTHONPATH'] = os.pathsep.join([here, str(REPO), env.get('PYTHONPATH', '')])
    env.setdefault('OMP_NUM_THREADS', '1')
    return env
