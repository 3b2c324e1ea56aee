"""Helpers of the toolkit tests: run a tool as a user does (subprocess, worktree on the path)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_tool(script: str, *args, cwd, check: bool = True, timeout: int = 600):
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([str(REPO), env.get('PYTHONPATH', '')])
    env.setdefault('OMP_NUM_THREADS', '1')
    r = subprocess.run([sys.executable, str(REPO / script), *map(str, args)], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f'{script} {args} failed ({r.returncode}):\n{r.stdout[-4000:]}\n'
                             f'{r.stderr[-4000:]}')
    return r


def tiny_instance_config(tmp: Path, **fields) -> Path:
    """The instance segmentation template copied and its dataset block set as a user does
    (``fields``: variable name -> value), plus a tiny Swin and 128 px images, so that a few
    iterations run in seconds on a CPU."""
    template = REPO / 'configs' / 'custom' / 'mask-rcnn_convnext-t_fpn_custom-coco.py'
    text = template.read_text().replace("_base_ = '../", f"_base_ = '{template.parent.parent}/")
    for name, value in fields.items():
        text, n = re.subn(rf'^{name} = .*$', f'{name} = {value!r}', text, count=1, flags=re.M)
        assert n == 1, f'{name} is not a line of {template}'
    (tmp / 'my_balloon.py').write_text(text)
    cfg = tmp / 'my_balloon_tiny.py'
    cfg.write_text(f"""_base_ = './my_balloon.py'
model = dict(
    backbone=dict(_delete_=True, type='swin_test', out_indices=(0, 1, 2, 3), init_cfg=None),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=32),
    rpn_head=dict(in_channels=32, feat_channels=32),
    roi_head=dict(bbox_roi_extractor=dict(out_channels=32),
                  bbox_head=dict(in_channels=32, fc_out_channels=64),
                  mask_roi_extractor=dict(out_channels=32),
                  mask_head=dict(num_convs=1, in_channels=32, conv_out_channels=32)))
_small = (128, 128)
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(filter_cfg=dict(filter_empty_gt=True, min_size=0), pipeline=[
        dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
        dict(type='Resize', scale=_small, keep_ratio=True), dict(type='PackDetInputs')]))
val_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(pipeline=[
        dict(type='LoadImageFromFile'), dict(type='Resize', scale=_small, keep_ratio=True),
        dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
        dict(type='PackDetInputs',
             meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))]))
test_dataloader = val_dataloader
optim_wrapper = dict(_delete_=True, type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01))
default_hooks = dict(logger=dict(interval=1))
""")
    return cfg
