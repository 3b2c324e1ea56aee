"""Images per second and peak memory of a config's model: a training step and inference.

    python tools/analysis/benchmark.py CONFIG [--device cpu|cuda] [--iters 20] [--warmup 3]
        [--mode train infer] [--batch-size N] [--cfg-options k=v ...]

Batches come from the config's own dataloaders (``train_dataloader`` for the training step,
``test_dataloader`` for inference) through the model's data preprocessor, so the numbers include
pre-processing on the device but not data loading. A training step is forward, backward and an
optimizer step (the config's ``optim_wrapper``). Peak memory is ``torch.cuda.max_memory_allocated``
on a GPU and the process's peak resident set size on a CPU (which includes everything else the
process holds).
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402


def parse_args(argv=None):
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--iters', type=int, default=20, help='timed iterations per mode')
    p.add_argument('--warmup', type=int, default=3, help='untimed iterations first')
    p.add_argument('--mode', nargs='+', choices=['train', 'infer'], default=['train', 'infer'])
    p.add_argument('--batch-size', type=int, help='override the dataloaders\' batch size')
    p.add_argument('--data-root', help='as tools/train.py --data-root')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config fields')
    return p.parse_args(argv)


def _peak_memory_mb(device: str) -> float:
    if device.startswith('cuda'):
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _batches(runner_cls, loader_cfg, batch_size):
    loader_cfg = dict(loader_cfg, num_workers=0, persistent_workers=False)
    if batch_size:
        loader_cfg['batch_size'] = batch_size
    loader = runner_cls.build_dataloader(loader_cfg)
    while True:
        yield from loader


def _sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize(device)


def run(args) -> list[dict]:
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.runner import Runner

    import densekit  # noqa: F401
    from densekit.mm.runner import apply_user_arguments, load_config
    cfg = load_config(args.config, args.cfg_options)
    args.max_iters = args.max_epochs = None
    apply_user_arguments(cfg, args)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model = MODELS.build(cfg.model).to(args.device)
    rows = []
    for mode in args.mode:
        loader_cfg = cfg.train_dataloader if mode == 'train' else cfg.test_dataloader
        batches = _batches(Runner, loader_cfg, args.batch_size)
        if mode == 'train':
            model.train()
            optim = build_optim_wrapper(model, cfg.optim_wrapper)
        else:
            model.eval()
        if args.device.startswith('cuda'):
            torch.cuda.reset_peak_memory_stats(args.device)
        images, elapsed = 0, 0.0
        for i in range(args.warmup + args.iters):
            data = next(batches)
            _sync(args.device)
            start = time.perf_counter()
            if mode == 'train':
                data = model.data_preprocessor(data, True)
                losses = model(**data, mode='loss')
                loss, _ = model.parse_losses(losses)
                optim.update_params(loss)
            else:
                with torch.no_grad():
                    model.test_step(data)
            _sync(args.device)
            if i >= args.warmup:
                elapsed += time.perf_counter() - start
                images += len(data['inputs'])
        rows.append(dict(mode=mode, images=images, seconds=elapsed,
                         images_per_s=images / elapsed if elapsed else float('nan'),
                         peak_mb=_peak_memory_mb(args.device)))
    return rows


def main(argv=None) -> None:
    args = parse_args(argv)
    rows = run(args)
    print(f'{args.config} on {args.device}')
    print(f"{'mode':<6} {'images':>7} {'img/s':>9} {'peak MB':>9}")
    for r in rows:
        print(f"{r['mode']:<6} {r['images']:>7} {r['images_per_s']:>9.2f} {r['peak_mb']:>9.0f}")


if __name__ == '__main__':
    main()
