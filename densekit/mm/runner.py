"""What ``tools/train.py`` and ``tools/test.py`` do: build an mmengine Runner from a config.

One entry point for detection, segmentation and depth: the config's ``default_scope`` ('mmdet'
or 'mmseg') picks the registries, as in mmdet / mmseg's own tools.
"""
from __future__ import annotations

import argparse
import difflib
import logging
import os
import os.path as osp
from copy import deepcopy
from typing import Any, Iterable

logger = logging.getLogger(__name__)


class ConfigKeyError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


def check_cfg_options(cfg, options: dict | None) -> None:
    """Refuses ``--cfg-options`` keys that look like typos of existing keys.

    A key whose parent exists but which is itself absent is accepted (adding a new field is
    legitimate) unless it is a near-miss of a sibling (``max_iter`` vs ``max_iters``).
    """
    for dotted in options or {}:
        node: Any = cfg
        parts = dotted.split('.')
        for depth, part in enumerate(parts):
            if isinstance(node, (list, tuple)) and part.isdigit():
                node = node[int(part)] if int(part) < len(node) else None
                continue
            if not hasattr(node, 'keys'):
                break
            if part in node:
                node = node[part]
                continue
            close = difflib.get_close_matches(part, [str(k) for k in node.keys()], n=1, cutoff=0.8)
            if close:
                where = '.'.join(parts[:depth]) or '<top level>'
                raise ConfigKeyError(
                    f"--cfg-options key '{dotted}': '{part}' is not a field of {where} in "
                    f"{cfg.filename}; did you mean '{close[0]}'?")
            break


def load_config(path: str, options: dict | None = None):
    from mmengine.config import Config
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file {path} does not exist')
    cfg = Config.fromfile(path)
    check_cfg_options(cfg, options)
    if options:
        cfg.merge_from_dict(options)
    return cfg


# densekit's hooks of the det / seg / depth runtimes (configs/_base_/default_runtime_*.py): a
# config that sets its own ``custom_hooks`` (mmengine replaces lists, it does not merge them)
# would otherwise drop them without a word
DENSEKIT_HOOKS = ('RNGStateHook', 'NumClassesCheckHook', 'BackboneCheckpointHook')


def add_densekit_hooks(cfg) -> list[str]:
    """Appends to ``cfg.custom_hooks`` each of :data:`DENSEKIT_HOOKS` it lacks; returns their names.

    ``densekit_hooks = False`` in a config opts out (then ``custom_hooks`` is used as written).
    """
    if not cfg.get('densekit_hooks', True):
        return []
    hooks = list(cfg.get('custom_hooks') or [])
    present = set()
    for h in hooks:
        kind = h.get('type') if hasattr(h, 'get') else h
        if not isinstance(kind, str):  # a Hook class or instance
            kind = kind.__name__ if isinstance(kind, type) else type(kind).__name__
        present.add(kind.rsplit('.', 1)[-1])  # 'mmengine.RNGStateHook' names the same hook
    missing = [name for name in DENSEKIT_HOOKS if name not in present]
    if missing:
        cfg.custom_hooks = hooks + [dict(type=name) for name in missing]
        from mmengine.logging import print_log
        print_log(f'added densekit hooks {missing} to custom_hooks (set densekit_hooks = False in '
                  'the config to opt out)', logger='current')
    return missing


def _setup_launcher(cfg, launcher: str) -> None:
    cfg.launcher = launcher
    if launcher != 'none':
        import torch
        if not torch.cuda.is_available():
            cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'


def build_runner(cfg):
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def _work_dir(cfg, work_dir: str | None, config_path: str) -> None:
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])


def train_parser() -> argparse.ArgumentParser:
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description='Train a densekit / mmdet / mmseg model')
    p.add_argument('config', help='config file')
    p.add_argument('--work-dir', help='where logs and checkpoints go')
    p.add_argument('--resume', nargs='?', type=str, const='auto',
                   help='resume from CKPT, or from the latest checkpoint in work-dir if no CKPT')
    p.add_argument('--resume-fallback', action='store_true',
                   help='if the resume checkpoint is truncated or corrupted, resume from the '
                        'newest intact checkpoint of its folder')
    p.add_argument('--amp', action='store_true', help='automatic mixed precision')
    p.add_argument('--auto-scale-lr', action='store_true', help='scale lr by the batch size')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config fields, key=value (e.g. train_cfg.max_iters=10)')
    p.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    p.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return p


def train(argv: Iterable[str] | None = None):
    import densekit  # noqa: F401  (compat layer + registration)
    args = train_parser().parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    cfg = load_config(args.config, args.cfg_options)
    add_densekit_hooks(cfg)
    from densekit.mm.reliability import add_reliability_hooks
    add_reliability_hooks(cfg)
    _setup_launcher(cfg, args.launcher)
    _work_dir(cfg, args.work_dir, args.config)

    if args.amp:
        wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if wrapper == 'AmpOptimWrapper':
            logger.warning('AMP is already enabled in the config')
        else:
            if wrapper != 'OptimWrapper':
                raise ValueError(f'--amp needs optim_wrapper.type OptimWrapper, got {wrapper}')
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'

    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise KeyError(f'--auto-scale-lr needs auto_scale_lr.base_batch_size in {args.config}')
        cfg.auto_scale_lr.enable = True

    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            raise FileNotFoundError(f'--resume checkpoint {args.resume} does not exist')
        cfg.resume = True
        cfg.load_from = args.resume

    if cfg.get('resume'):
        from densekit.mm.reliability import check_resume
        cfg.load_from = check_resume(cfg.work_dir, cfg.get('load_from'), args.resume_fallback)
    runner = build_runner(cfg)
    runner.train()
    return runner


def test_parser() -> argparse.ArgumentParser:
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description='Evaluate a densekit / mmdet / mmseg model')
    p.add_argument('config', help='config file')
    p.add_argument('checkpoint', help='checkpoint file')
    p.add_argument('--work-dir', help='where evaluation logs go')
    p.add_argument('--out', help='detection: a .pkl of raw predictions; segmentation / depth: '
                                 'a directory for predicted maps')
    p.add_argument('--show-dir', help='write visualisations (prediction beside the input) here')
    p.add_argument('--tta', action='store_true', help='test-time augmentation (tta_model / '
                                                      'tta_pipeline of the config)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config fields')
    p.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    p.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return p


def _enable_visualization(cfg, show_dir: str) -> None:
    hooks = cfg.get('default_hooks', {})
    if 'visualization' not in hooks:
        raise KeyError(f"--show-dir needs default_hooks.visualization in {cfg.filename}")
    hook = hooks['visualization']
    hook['draw'] = True
    scope = cfg.get('default_scope', 'mmdet')
    if scope == 'mmdet':
        # DetVisualizationHook writes under work_dir/timestamp/<test_out_dir>; an absolute
        # path keeps the user's folder exactly.
        hook['test_out_dir'] = osp.abspath(show_dir)
    else:
        hook['interval'] = 1
        cfg.visualizer['save_dir'] = osp.abspath(show_dir)
        if 'show_dir' in hook or hook.get('type', '').startswith('Depth'):
            hook['show_dir'] = osp.abspath(show_dir)


def _enable_tta(cfg) -> None:
    if 'tta_model' not in cfg or 'tta_pipeline' not in cfg:
        raise KeyError(f'--tta needs tta_model and tta_pipeline in {cfg.filename}')
    from mmengine.config import ConfigDict
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline


def _enable_out(cfg, out: str) -> None:
    scope = cfg.get('default_scope', 'mmdet')
    if scope == 'mmdet':
        if not out.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--out {out}: detection results are dumped as a .pkl file')
        evaluators = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) \
            else [cfg.test_evaluator]
        cfg.test_evaluator = [*evaluators, dict(type='DumpDetResults', out_file_path=out)]
    else:
        # mmseg's IoUMetric creates output_dir on the main process only, and the other ranks of a
        # distributed test can write their first prediction before it exists: create it on every rank
        os.makedirs(out, exist_ok=True)
        cfg.test_evaluator['output_dir'] = out
        cfg.test_evaluator['keep_results'] = True


def test(argv: Iterable[str] | None = None):
    import densekit  # noqa: F401
    args = test_parser().parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint {args.checkpoint} does not exist')
    cfg = load_config(args.config, args.cfg_options)
    add_densekit_hooks(cfg)
    _setup_launcher(cfg, args.launcher)
    _work_dir(cfg, args.work_dir, args.config)
    cfg.load_from = args.checkpoint
    if args.show_dir:
        _enable_visualization(cfg, args.show_dir)
    if args.tta:
        _enable_tta(cfg)
    if args.out:
        _enable_out(cfg, args.out)
    runner = build_runner(cfg)
    from densekit.mm.hooks import CheckpointCoversModelHook
    runner.register_hook(CheckpointCoversModelHook())
    metrics = runner.test()
    _check_metrics(cfg, metrics, args.checkpoint)
    return runner, metrics


def _check_metrics(cfg, metrics: dict | None, checkpoint: str) -> None:
    # mmdet's CocoMetric returns {} (after an ERROR log line) when the model predicted nothing
    # above test_cfg's score threshold on every image: the run used to exit 0 with no number.
    evaluators = cfg.get('test_evaluator') or []
    evaluators = evaluators if isinstance(evaluators, (list, tuple)) else [evaluators]
    if metrics or any(e.get('format_only') for e in evaluators):
        return
    raise RuntimeError(
        f"tools/test.py: the test evaluator(s) {[e.get('type') for e in evaluators]} returned no "
        f"metric for checkpoint {checkpoint}; for COCO metrics this means the model made no "
        f"prediction above model.test_cfg's score threshold on any test image (an untrained or "
        f"collapsed model: its mAP is 0)")
