"""A CPU soak: ``--iters`` (2,000) training iterations of a tiny segmentation config through
``tools/train.py``'s code path (densekit's reliability hooks included, checkpoints every 500
iterations), recording the process's resident memory every ``--every`` iterations.

Reported: the resident memory after the warm-up (``--warmup`` iterations), at the end, the growth
between the two in percent (the target is < 5 %), the largest value, and the mean seconds per
iteration. Measured, not asserted.

    python benchmarks/soak.py [--iters 2000] [--warmup 200] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CONFIG = '''
_base_ = ['{base}']
randomness = dict(seed=0)
crop = (32, 32)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0,
                           seg_pad_val=255, size=crop),
    backbone=dict(type='TimmBackbone', model_name='resnet10t', out_indices=(1, 2)),
    decode_head=dict(type='FCNHead', in_channels=128, in_index=1, channels=16, num_convs=1,
                     concat_input=False, num_classes=4, norm_cfg=dict(type='BN'), align_corners=False,
                     loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(), test_cfg=dict(mode='whole'))
train_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', reduce_zero_label=True),
                  dict(type='RandomFlip', prob=0.5), dict(type='PackSegInputs')]
train_dataloader = dict(batch_size=2, num_workers=0, sampler=dict(type='InfiniteSampler', shuffle=True),
                        dataset=dict(type='BaseSegDataset', data_root='{data}', reduce_zero_label=True,
                                     img_suffix='.jpg', seg_map_suffix='.png', pipeline=train_pipeline,
                                     metainfo=dict(classes=('a', 'b', 'c', 'd'),
                                                   palette=[[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]),
                                     data_prefix=dict(img_path='images', seg_map_path='annotations')))
val_dataloader = None
val_cfg = None
val_evaluator = None
test_dataloader = None
test_cfg = None
test_evaluator = None
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.01))
param_scheduler = [dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=100)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters={iters})
default_hooks = dict(logger=dict(interval=100),
                     checkpoint=dict(by_epoch=False, interval=500, max_keep_ckpts=2),
                     visualization=dict(type='SegVisualizationHook', draw=False))
custom_hooks = [dict(type='SoakMemoryHook', every={every}, out='{out}')]
'''


def _rss_mb() -> float:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


def _register_hook() -> None:
    from mmengine.hooks import Hook
    from mmengine.registry import HOOKS

    @HOOKS.register_module(force=True)
    class SoakMemoryHook(Hook):
        def __init__(self, every: int, out: str) -> None:
            self.every, self.out, self.rows, self.t0 = every, out, [], None

        def before_train(self, runner) -> None:
            self.t0 = time.perf_counter()

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
            it = runner.iter + 1
            if it % self.every == 0 or it == 1:
                self.rows.append((it, round(_rss_mb(), 1), round(time.perf_counter() - self.t0, 1)))
                Path(self.out).write_text(json.dumps(self.rows))


def _make_data(root: Path, n: int = 8, size: int = 32) -> Path:
    import cv2
    import numpy as np
    rng = np.random.default_rng(0)
    (root / 'images').mkdir(parents=True)
    (root / 'annotations').mkdir(parents=True)
    for i in range(n):
        label = np.zeros((size, size), np.uint8)
        label[:, : size // 2] = 1 + i % 3
        label[:, size // 2:] = 2 + i % 2
        img = (label[..., None] * 60 + rng.integers(0, 30, (size, size, 3))).astype(np.uint8)
        cv2.imwrite(str(root / 'images' / f'{i:03d}.jpg'), img)
        cv2.imwrite(str(root / 'annotations' / f'{i:03d}.png'), label)
    return root


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--iters', type=int, default=2000)
    p.add_argument('--warmup', type=int, default=200)
    p.add_argument('--every', type=int, default=50)
    p.add_argument('--json', help='write the results here')
    a = p.parse_args()
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    import torch
    torch.set_num_threads(1)
    import densekit  # noqa: F401
    from densekit.mm.runner import train
    _register_hook()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = _make_data(tmp / 'data')
        rows_file = tmp / 'rss.json'
        cfg = tmp / 'soak.py'
        cfg.write_text(CONFIG.format(base=REPO / 'configs' / '_base_' / 'default_runtime_seg.py',
                                     data=data, iters=a.iters, every=a.every, out=rows_file))
        t0 = time.perf_counter()
        train([str(cfg), '--work-dir', str(tmp / 'work')])
        seconds = time.perf_counter() - t0
        rows = json.loads(rows_file.read_text())
    warm = min((r for r in rows if r[0] >= a.warmup), key=lambda r: r[0])
    end = rows[-1]
    first_timed = warm
    result = dict(
        iters=a.iters, warmup=a.warmup, rss_after_warmup_mb=warm[1], rss_end_mb=end[1],
        growth_pct=round(100 * (end[1] - warm[1]) / warm[1], 2), rss_max_mb=max(r[1] for r in rows),
        seconds_per_iter=round((end[2] - first_timed[2]) / max(1, end[0] - first_timed[0]), 4),
        total_seconds=round(seconds, 1), loadavg_before=[round(x, 2) for x in load_before],
        loadavg_after=[round(x, 2) for x in os.getloadavg()], cpus=os.cpu_count(), rss_every=rows)
    print(json.dumps({k: v for k, v in result.items() if k != 'rss_every'}, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1))


if __name__ == '__main__':
    main()
