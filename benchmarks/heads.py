"""Train / inference throughput of the detection and segmentation heads on densekit backbones.

Two modes:

* ``--mode tiny`` (CPU regression figure): the tiny copies used by
  ``tools/dev/tiny_configs.py`` (``*_test`` backbone, 64-wide heads, images / 8), batch 2.
* ``--mode full`` (GPU): the configs as written (Swin-T, standard resolution: COCO images
  800x1333, ADE20K 512x512), batch 2, bf16 autocast; each model is timed twice in the same run,
  once on densekit's fastest attention backends (automatic choice) and once on the reference
  paths (``DENSEKIT_ATTN_BACKEND=reference``), and the ratio is printed.

Prints one markdown table row per model: train img/s, inference img/s, peak memory (CUDA).
Nothing here is asserted; results go to ``benchmarks/RESULTS.md`` by hand.

    python benchmarks/heads.py --mode tiny --device cpu
    python benchmarks/heads.py --mode full --device cuda
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import os
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / 'benchmarks')]
sys.path.insert(0, str(REPO / 'tools' / 'dev'))  # tiny_configs + config_demo_data

from _timing import seconds_per_call  # noqa: E402  (benchmarks/_timing.py)

MODELS = {
    'Mask R-CNN Swin-T (COCO)': 'configs/mask_rcnn/mask-rcnn_swin-t_fpn_1x_coco.py',
    'DINO-4scale Swin-T (COCO)': 'configs/dino/dino-4scale_swin-t_12e_coco.py',
    'Mask2Former Swin-T (ADE20K)': 'configs/mask2former/mask2former_swin-t_160k_ade20k-512x512.py',
    'UPerNet Swin-T (ADE20K)': 'configs/upernet/upernet_swin-t_160k_ade20k-512x512.py',
}


def _data(root: Path, mode: str) -> None:
    from config_demo_data import make_ade, make_coco
    if mode == 'tiny':
        make_coco(root)
        make_ade(root)
    else:  # standard resolutions (images are resized by the pipelines anyway)
        make_coco(root, num_images=2, h=800, w=1333)
        make_ade(root, num_images=2, h=512, w=683)


def _prepare(path: str, root: Path, mode: str):
    from mmengine.config import Config
    from tiny_configs import relocate_data, tiny

    cfg = Config.fromfile(str(REPO / path))
    if mode == 'tiny':
        return tiny(cfg, root)
    cfg = copy.deepcopy(cfg)
    cfg.model.backbone.pop('init_cfg', None)  # random weights: throughput only
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[name] = relocate_data(cfg[name], root)
    return cfg


def bench(path: str, root: Path, mode: str, device: str, iters: int) -> tuple[float, float, float]:
    from mmengine.dataset import pseudo_collate
    from mmengine.model import revert_sync_batchnorm
    from mmengine.optim import build_optim_wrapper
    from tiny_configs import build_model, dataset

    cfg = _prepare(path, root, mode)
    model = revert_sync_batchnorm(build_model(cfg)).to(device)
    optim = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
    train_set = dataset(cfg, 'train_dataloader')
    val_set = dataset(cfg, 'val_dataloader')
    train_batch = pseudo_collate([train_set[0], train_set[1]])
    val_batch = pseudo_collate([val_set[0], val_set[1]])
    amp = (torch.autocast('cuda', dtype=torch.bfloat16) if device == 'cuda'
           else contextlib.nullcontext())

    def train():
        model.train()
        with amp:
            model.train_step(train_batch, optim)

    def infer():
        model.eval()
        with torch.no_grad(), amp:
            model.test_step(val_batch)

    if device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    # one warm-up call each (allocations, autotuning)
    t_train = seconds_per_call(train, device, iters, warmup=1)
    t_infer = seconds_per_call(infer, device, iters, warmup=1)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == 'cuda' else float('nan')
    return 2 / t_train, 2 / t_infer, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--mode', choices=('tiny', 'full'), default='tiny')
    ap.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    ap.add_argument('--iters', type=int, default=5)
    args = ap.parse_args()
    import densekit  # noqa: F401  (registers backbones, ops, constructors)

    backends = ['auto'] if args.device == 'cpu' else ['auto', 'reference']
    print('| model | mode | device | attention backend | train img/s | inference img/s '
          '| peak GiB |')
    print('|---|---|---|---|---|---|---|')
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _data(root, args.mode)
        for name, path in MODELS.items():
            for backend in backends:
                os.environ['DENSEKIT_ATTN_BACKEND'] = backend
                try:
                    tr, inf, peak = bench(path, root, args.mode, args.device, args.iters)
                except Exception as e:  # report and go on: one broken model must not hide the rest
                    print(f'| {name} | {args.mode} | {args.device} | {backend} | error: '
                          f'{type(e).__name__}: {str(e)[:80]} | | |')
                    continue
                print(f'| {name} | {args.mode} | {args.device} | {backend} | {tr:.2f} | {inf:.2f} '
                      f'| {peak:.2f} |', flush=True)


if __name__ == '__main__':
    main()
