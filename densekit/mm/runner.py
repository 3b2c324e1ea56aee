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
import re
from copy import deepcopy
from typing import Any, Iterable

logger = logging.getLogger(__name__)


class ConfigKeyError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


class ConfigOptionError(ValueError):
    """A ``--cfg-options`` item that cannot be applied; the message names the item."""


def cfg_options_action():
    """mmengine's ``DictAction`` that first checks each ``KEY=VALUE`` item: an item without
    ``=``, a key with an empty part (``a..b``, ``.a``) or a value with unbalanced brackets is
    an argparse error naming the item, not an ``AssertionError`` / ``ValueError`` from inside
    mmengine (or, for the empty parts, a silently created field ``''``)."""
    import argparse

    from mmengine.config import DictAction

    class CfgOptionsAction(DictAction):
        def __call__(self, parser, namespace, values, option_string=None):
            for item in values:
                try:
                    check_cfg_option_item(item)
                except ConfigOptionError as e:
                    raise argparse.ArgumentError(self, str(e)) from None
            super().__call__(parser, namespace, values, option_string)

    return CfgOptionsAction


def check_cfg_option_item(item: str) -> None:
    """Raises :class:`ConfigOptionError` for a malformed ``--cfg-options`` item (see
    :func:`cfg_options_action`)."""
    key, sep, value = item.partition('=')
    if not sep:
        raise ConfigOptionError(f"--cfg-options item {item!r} has no '=': write KEY=VALUE")
    if not key or '' in key.split('.'):
        raise ConfigOptionError(f"--cfg-options item {item!r}: the key {key!r} has an empty part; "
                                'write dotted field names such as model.backbone.depth')
    from mmengine.config import DictAction
    try:
        DictAction._parse_iterable(value)
    except Exception:  # noqa: BLE001 (mmengine asserts balanced brackets)
        raise ConfigOptionError(f'--cfg-options item {item!r}: the brackets of the value {value!r} '
                                'do not match') from None


def check_cfg_options(cfg, options: dict | None) -> None:
    """Refuses ``--cfg-options`` keys that look like typos of existing keys, and keys that lead
    through a field that is not a dict or list (``model.backbone.depth.x`` with ``depth=50``) or
    index a list out of range or by name; mmengine would fail on those with a ``TypeError`` /
    ``KeyError`` that names neither the option nor the field.

    A key whose parent exists but which is itself absent is accepted (adding a new field is
    legitimate) unless it is a near-miss of a sibling (``max_iter`` vs ``max_iters``).
    """
    for dotted in options or {}:
        node: Any = cfg
        parts = dotted.split('.')
        if '' in parts:
            raise ConfigKeyError(f"--cfg-options key {dotted!r} has an empty part")
        for depth, part in enumerate(parts):
            where = '.'.join(parts[:depth]) or '<top level>'
            if isinstance(node, (list, tuple)):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigKeyError(
                        f"--cfg-options key '{dotted}': {where} is a list of {len(node)} items; "
                        f"'{part}' is not an index of it (0 to {len(node) - 1})")
                node = node[int(part)]
                continue
            if not hasattr(node, 'keys'):
                if depth:
                    raise ConfigKeyError(
                        f"--cfg-options key '{dotted}': {where} is {node!r} (a "
                        f"{type(node).__name__}), which has no field '{part}'; set {where} itself, "
                        f'or write {where}=dict(...)')
                break
            if part in node:
                node = node[part]
                continue
            close = difflib.get_close_matches(part, [str(k) for k in node.keys()], n=1, cutoff=0.8)
            if close:
                raise ConfigKeyError(
                    f"--cfg-options key '{dotted}': '{part}' is not a field of {where} in "
                    f"{cfg.filename}; did you mean '{close[0]}'?")
            break


def _merge_options(cfg, options: dict) -> None:
    """``cfg.merge_from_dict(options)``, except that an item of a list that is not a dict is
    replaced directly (mmengine's merge calls ``.copy()`` on it: ``AttributeError``)."""
    rest = {}
    for dotted, value in options.items():
        parts = dotted.split('.')
        parent: Any = cfg
        for part in parts[:-1]:
            if isinstance(parent, (list, tuple)):
                parent = parent[int(part)]  # an index check_cfg_options accepted
            else:
                parent = parent.get(part) if hasattr(parent, 'keys') else None
        last = parts[-1]
        if isinstance(parent, list) and last.isdigit() and not hasattr(parent[int(last)], 'keys'):
            parent[int(last)] = value
        elif isinstance(parent, tuple) and last.isdigit() and not hasattr(parent[int(last)], 'keys'):
            raise ConfigKeyError(f"--cfg-options key '{dotted}': {'.'.join(parts[:-1])} is a tuple, "
                                 'whose items cannot be replaced one by one; set the whole tuple')
        else:
            rest[dotted] = value
    if rest:
        cfg.merge_from_dict(rest)


def load_config(path: str, options: dict | None = None):
    from mmengine.config import Config
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file {path} does not exist')
    cfg = Config.fromfile(path)
    check_top_level_keys(cfg)
    check_cfg_options(cfg, options)
    refuse_parse_time_options(cfg, options)
    if options:
        _merge_options(cfg, options)
    return cfg


# --------------------------------------------------------------------------- config checks
# The top-level keys mmengine's Runner (``Runner.from_cfg``) and densekit's tools read. A config may
# define any other top-level variable (``data_root``, ``norm_cfg``, ``train_pipeline``), so only a
# near-miss of one of these names is taken for a typo.
RUNNER_KEYS = (
    'model', 'work_dir', 'train_dataloader', 'val_dataloader', 'test_dataloader', 'train_cfg',
    'val_cfg', 'test_cfg', 'auto_scale_lr', 'optim_wrapper', 'param_scheduler', 'val_evaluator',
    'test_evaluator', 'default_hooks', 'custom_hooks', 'data_preprocessor', 'load_from', 'resume',
    'launcher', 'env_cfg', 'log_processor', 'log_level', 'visualizer', 'default_scope',
    'randomness', 'experiment_name', 'runner_type', 'model_wrapper_cfg', 'custom_imports',
    'tta_model', 'tta_pipeline', 'densekit_hooks', 'classes', 'plot_curves', 'tensorboard')
# common top-level variables that are near-misses of a runner key (mmdet / mmseg configs use them)
_NOT_TYPOS = ('models', 'conv_cfg', 'norm_cfg', 'act_cfg')


def check_top_level_keys(cfg) -> None:
    """Refuses a top-level key that is a near-miss of a key the runner reads (``trian_cfg``).

    mmengine ignores top-level keys it does not know, so such a typo silently drops the setting.
    """
    for key in cfg.keys():
        if key in RUNNER_KEYS or key in _NOT_TYPOS or key.startswith('_') \
                or key.endswith('_pipeline') or any(key.startswith(k + '_') for k in RUNNER_KEYS):
            continue
        # a typo keeps the length about the same; 'pipeline' is a variable, not 'tta_pipeline'
        candidates = [k for k in RUNNER_KEYS
                      if abs(len(k) - len(key)) <= 2 and key not in k and k not in key]
        close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.8)
        if close:
            raise ConfigKeyError(
                f"{cfg.filename}: top-level key '{key}' is not read by the runner; did you mean "
                f"'{close[0]}'?")


# top-level variables that other fields copy when the config file is parsed: overriding them
# afterwards changes nothing else
_PARSE_TIME = {'data_root': 'use --data-root DIR, which rewrites the paths of every dataloader and '
                            'evaluator',
               'max_iters': 'use --max-iters N, which also rescales the schedulers',
               'max_epochs': 'use --max-epochs N, which also rescales the schedulers',
               'num_classes': "set 'classes' instead (--cfg-options \"classes=('a','b')\"): "
                              'tools/train.py and tools/test.py set every head\'s num_classes and '
                              'the datasets\' metainfo from it'}


def refuse_parse_time_options(cfg, options: dict | None) -> None:
    """``--cfg-options data_root=...`` would be a silent no-op: the datasets copied the variable
    when the config file was parsed. Such options are refused with the flag that does the job."""
    for key in options or {}:
        if key in _PARSE_TIME and key in cfg:
            raise ConfigKeyError(
                f'--cfg-options {key}=...: {key} is a variable of {cfg.filename} that other fields '
                f'copied when the file was parsed, so overriding it changes nothing; '
                f'{_PARSE_TIME[key]}')


_UNEXPECTED_KWARG = re.compile(r"(\w+)\.__init__\(\) got an unexpected keyword argument '(\w+)'")


def explain_unexpected_kwarg(cfg, error: TypeError) -> TypeError | None:
    """A ``TypeError`` raised while building from ``cfg`` for an unknown keyword (``num_clases``),
    re-worded with the config path of the key and the closest argument of the class, or ``None``
    when the keyword is not a key of the config."""
    found = _UNEXPECTED_KWARG.search(str(error))
    if not found:
        return None
    cls_name, key = found.groups()
    places = list(_dicts_with_key(cfg._cfg_dict.to_dict() if hasattr(cfg, '_cfg_dict') else cfg,
                                  key))
    if not places:
        return None
    lines = []
    for path, d in places:
        params = _init_params(d.get('type'), cfg.get('default_scope')) | _init_params(
            cls_name, cfg.get('default_scope'))
        close = difflib.get_close_matches(key, sorted(params - {key}), n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ''
        lines.append(f"'{path}.{key}' is not an argument of {d.get('type', cls_name)}{hint}")
    return TypeError(f"{cfg.filename}: " + '; '.join(lines) + f' ({error})')


def _dicts_with_key(node, key: str, path: str = ''):
    if isinstance(node, dict):
        if key in node:
            yield path or '<top level>', node
        for k, v in node.items():
            yield from _dicts_with_key(v, key, f'{path}.{k}' if path else str(k))
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _dicts_with_key(v, key, f'{path}[{i}]')


def _init_params(kind, scope: str | None) -> set[str]:
    """The keyword arguments of ``kind``'s ``__init__`` and of its bases' (a class, or a registered
    name looked up in ``scope``'s registries and mmengine's)."""
    import inspect
    cls = kind if isinstance(kind, type) else None
    if cls is None and isinstance(kind, str):
        from importlib import import_module
        for mod in (f'{scope}.registry' if scope else None, 'mmengine.registry'):
            if mod is None:
                continue
            try:
                registries = import_module(mod)
            except ImportError:
                continue
            for name in ('MODELS', 'DATASETS', 'TRANSFORMS', 'METRICS', 'HOOKS', 'TASK_UTILS',
                         'PARAM_SCHEDULERS', 'OPTIM_WRAPPERS', 'OPTIMIZERS', 'VISUALIZERS',
                         'DATA_SAMPLERS', 'LOOPS'):
                registry = getattr(registries, name, None)
                try:
                    cls = registry.get(kind) if registry is not None else None
                except Exception:  # noqa: BLE001  (a registry that cannot import its module)
                    cls = None
                if cls is not None:
                    break
            if cls is not None:
                break
    params: set[str] = set()
    for klass in getattr(cls, '__mro__', ()):
        init = klass.__dict__.get('__init__')
        if init is None:
            continue
        try:
            params |= {n for n, p in inspect.signature(init).parameters.items()
                       if n != 'self' and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        except (TypeError, ValueError):
            continue
    return params


def run_explained(cfg, fn):
    """Calls ``fn()`` (building the runner, training, testing); a ``TypeError`` for a keyword the
    config misspelt is re-raised naming the config path and the closest argument."""
    try:
        return fn()
    except TypeError as e:
        explained = explain_unexpected_kwarg(cfg, e)
        if explained is None:
            raise
        raise explained from e


# ------------------------------------------------------------------ own-dataset conveniences
# heads whose ``num_classes`` does not count the dataset classes (class-agnostic proposals; a
# panoptic FPN's semantic head counts stuff + 1)
_NOT_CLASS_HEADS = ('RPNHead', 'FusedSemanticHead', 'PanopticFPNHead')


def apply_classes(cfg) -> int | None:
    """Makes a top-level ``classes`` the one source of the class list: every dataset's
    ``metainfo.classes`` and every head's ``num_classes`` (and a Mask2Former-style
    ``loss_cls.class_weight``) follow it. Returns the number of classes, ``None`` without
    ``classes`` in the config. tools/train.py and tools/test.py call it after ``--cfg-options``.
    """
    classes = cfg.get('classes')
    if classes is None:
        return None
    if isinstance(classes, str):
        raise ValueError(f"classes = {classes!r} in {cfg.filename} is a string; it must be a tuple "
                         f"of names (one class: classes = ({classes!r},))")
    classes = tuple(classes)
    n = len(classes)
    for which in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(which)
        if loader:
            for ds in _datasets(loader.get('dataset')):
                meta = dict(ds.get('metainfo') or {})
                if 'palette' in meta and len(meta['palette']) != n:
                    del meta['palette']  # a palette of the old class count would be refused
                meta['classes'] = classes
                ds['metainfo'] = meta
    _set_num_classes(cfg.get('model'), n, '')
    return n


def _datasets(ds):
    """A dataset config and those wrapped in it (ConcatDataset, RepeatDataset, ...)."""
    if not isinstance(ds, dict):
        return
    inner = [d for d in ([ds.get('dataset')] + list(ds.get('datasets') or [])) if d is not None]
    if not inner:
        yield ds
    for d in inner:
        yield from _datasets(d)


def _set_num_classes(node, n: int, name: str) -> None:
    if isinstance(node, (list, tuple)):
        for v in node:
            _set_num_classes(v, n, name)
        return
    if not isinstance(node, dict):
        return
    if name == 'rpn_head' or node.get('type') in _NOT_CLASS_HEADS:
        return
    if 'num_classes' in node and isinstance(node['num_classes'], int):
        old = node['num_classes']
        node['num_classes'] = n
        loss = node.get('loss_cls')
        weight = loss.get('class_weight') if isinstance(loss, dict) else None
        if isinstance(weight, (list, tuple)) and len(weight) == old + 1:
            loss['class_weight'] = [weight[0]] * n + [weight[-1]]  # + the "no object" class
    for k, v in node.items():
        _set_num_classes(v, n, k)


def _class_heads_cfg(node, path: str = 'model') -> list[tuple[str, int]]:
    """(config path, num_classes) of every head config that :func:`apply_classes` sets."""
    found: list[tuple[str, int]] = []
    if isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            found += _class_heads_cfg(v, f'{path}[{i}]')
    elif isinstance(node, dict):
        if path.endswith('rpn_head') or node.get('type') in _NOT_CLASS_HEADS:
            return found
        if isinstance(node.get('num_classes'), int):
            found.append((path, node['num_classes']))
        for k, v in node.items():
            found += _class_heads_cfg(v, f'{path}.{k}')
    return found


def set_data_root(cfg, root: str) -> list[str]:
    """``--data-root DIR``: every dataloader's ``data_root`` becomes ``root``, and each evaluator
    path under the old root (``data_root + 'annotations/...'``, fixed when the config file was
    parsed) moves under ``root``. Returns the old roots."""
    loaders = [cfg.get(k) for k in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    datasets = [ds for loader in loaders if loader for ds in _datasets(loader.get('dataset'))]
    old = {ds['data_root'] for ds in datasets if isinstance(ds.get('data_root'), str)}
    if isinstance(cfg.get('data_root'), str):
        old.add(cfg.data_root)
    old = sorted((o for o in old if o), key=len, reverse=True)  # the longest prefix first
    if not datasets:
        raise KeyError(f'--data-root: {cfg.filename} has no dataloader with a dataset')
    for ds in datasets:
        ds['data_root'] = root
    seen: set[int] = set()
    for key in ('val_evaluator', 'test_evaluator'):
        evaluators = cfg.get(key) or []
        for ev in evaluators if isinstance(evaluators, (list, tuple)) else [evaluators]:
            if id(ev) in seen or not isinstance(ev, dict):
                continue
            seen.add(id(ev))
            for field, value in list(ev.items()):
                if not isinstance(value, str):
                    continue
                prefix = next((o for o in old if value.startswith(o)), None)
                if prefix is not None:
                    ev[field] = osp.join(root, value[len(prefix):].lstrip('/'))
    cfg.data_root = root
    return old


def set_schedule_length(cfg, max_iters: int | None = None, max_epochs: int | None = None) -> float:
    """``--max-iters N`` / ``--max-epochs N``: the train loop's length, and every parameter
    scheduler's ``begin`` / ``end`` / ``milestones`` / ``T_max`` scaled by the same factor (a
    warm-up of 500 of 90k iterations stays the same fraction of the run). The validation and
    checkpoint intervals are capped at the new length. Returns the factor."""
    loop = cfg.get('train_cfg')
    if not loop:
        raise KeyError(f'--max-iters / --max-epochs: {cfg.filename} has no train_cfg')
    by_epoch = 'max_epochs' in loop or loop.get('by_epoch', False) or \
        str(loop.get('type', '')).startswith('EpochBased')
    key, new = ('max_epochs', max_epochs) if by_epoch else ('max_iters', max_iters)
    if new is None:
        given = '--max-iters' if max_iters is not None else '--max-epochs'
        raise ValueError(f"{given}: the train loop of {cfg.filename} is "
                         f"{'epoch' if by_epoch else 'iteration'}-based; use "
                         f"--{key.replace('_', '-')}")
    if new < 1:
        raise ValueError(f'--{key.replace("_", "-")} must be >= 1, got {new}')
    old = loop.get(key)
    if not old:
        raise KeyError(f'train_cfg.{key} is not set in {cfg.filename}')
    factor = new / old
    loop[key] = new
    if loop.get('val_interval', 0) > new:
        loop['val_interval'] = new
    if loop.get('val_begin', 0) > new:
        loop['val_begin'] = new
    schedulers = cfg.get('param_scheduler') or []
    for s in schedulers if isinstance(schedulers, (list, tuple)) else [schedulers]:
        _scale_scheduler(s, factor)
    ckpt = (cfg.get('default_hooks') or {}).get('checkpoint')
    if ckpt and bool(ckpt.get('by_epoch', True)) == by_epoch and ckpt.get('interval', 0) > new:
        ckpt['interval'] = new
    return factor


_INF_END = 10 ** 9  # mmengine's default ``end`` (INF) and configs' "until the end" sentinels


def _scale_scheduler(s: dict, factor: float) -> None:
    begin = s.get('begin', 0)
    new_begin = int(round(begin * factor))
    if 'begin' in s:
        s['begin'] = new_begin
    end = s.get('end')
    if isinstance(end, (int, float)) and end < _INF_END:
        s['end'] = max(new_begin + 1, int(round(end * factor)))
    if isinstance(s.get('T_max'), (int, float)):
        s['T_max'] = max(1, int(round(s['T_max'] * factor)))
    if isinstance(s.get('milestones'), (list, tuple)):
        s['milestones'] = sorted({max(1, int(round(m * factor))) for m in s['milestones']})


def add_user_arguments(p: argparse.ArgumentParser, training: bool) -> None:
    """``--data-root`` (both tools), ``--max-iters`` / ``--max-epochs`` (training)."""
    p.add_argument('--data-root', help='dataset root: replaces data_root in every dataloader and '
                                       'the annotation paths of the evaluators')
    if training:
        group = p.add_mutually_exclusive_group()
        group.add_argument('--max-iters', type=int,
                           help='train this many iterations; schedulers are rescaled to match')
        group.add_argument('--max-epochs', type=int,
                           help='train this many epochs; schedulers are rescaled to match')


def add_curves_hook(runner, cfg) -> None:
    """Training draws ``<work_dir>/curves.png`` at each validation (densekit.mm.curves) unless
    the config sets ``plot_curves = False`` or lists a ``CurvesHook`` itself."""
    if not cfg.get('plot_curves', True):
        return
    if any(type(h).__name__ == 'CurvesHook' for h in runner.hooks):
        return
    from densekit.mm.curves import CurvesHook
    runner.register_hook(CurvesHook())


def enable_tensorboard(cfg) -> bool:
    """``tensorboard = True`` in a config adds mmengine's ``TensorboardVisBackend`` to the
    visualizer (event files in ``<work_dir>/<timestamp>/vis_data/``), next to the local json
    scalars. TensorBoard is an optional extra: ``pip install -e ".[tensorboard]"``."""
    if not cfg.get('tensorboard', False):
        return False
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise ImportError(f'tensorboard = True in {cfg.filename} needs TensorBoard, which is an '
                          'optional extra: pip install -e ".[tensorboard]" (or pip install '
                          'tensorboard)') from None
    if 'visualizer' not in cfg:
        raise KeyError(f'tensorboard = True needs a visualizer in {cfg.filename}')
    backends = list(cfg.visualizer.get('vis_backends') or [])
    if not any(str(b.get('type', '')).endswith('TensorboardVisBackend') for b in backends):
        backends.append(dict(type='TensorboardVisBackend'))
    cfg.visualizer['vis_backends'] = backends
    return True


def apply_user_arguments(cfg, args) -> None:
    """What :func:`add_user_arguments` asked for, and the config's ``classes``."""
    from mmengine.logging import print_log
    if getattr(args, 'data_root', None):
        set_data_root(cfg, args.data_root)
    if getattr(args, 'max_iters', None) is not None or getattr(args, 'max_epochs', None) is not None:
        factor = set_schedule_length(cfg, args.max_iters, args.max_epochs)
        print_log(f'schedule rescaled by {factor:.4g}: train_cfg={dict(cfg.train_cfg)}',
                  logger='current')
    apply_classes(cfg)
    enable_tensorboard(cfg)
    for key in ('train_cfg.max_iters', 'train_cfg.max_epochs'):
        if key in (getattr(args, 'cfg_options', None) or {}) and cfg.get('param_scheduler'):
            flag = '--' + key.split('.')[1].replace('_', '-')
            print_log(f"--cfg-options {key} changes the loop only: the schedulers' begin / end / "
                      f'milestones keep their values; {flag} N rescales them too',
                      logger='current', level=logging.WARNING)


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
    p.add_argument('--cfg-options', nargs='+', action=cfg_options_action(),
                   help='override config fields, key=value (e.g. train_cfg.max_iters=10)')
    p.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    p.add_argument('--local_rank', '--local-rank', type=int, default=0)
    add_user_arguments(p, training=True)
    return p


def train(argv: Iterable[str] | None = None):
    import densekit  # noqa: F401  (compat layer + registration)
    args = train_parser().parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    cfg = load_config(args.config, args.cfg_options)
    apply_user_arguments(cfg, args)
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
    runner = run_explained(cfg, lambda: build_runner(cfg))
    add_curves_hook(runner, cfg)
    run_explained(cfg, runner.train)
    return runner


def test_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description='Evaluate a densekit / mmdet / mmseg model')
    p.add_argument('config', help='config file')
    p.add_argument('checkpoint', help='checkpoint file')
    p.add_argument('--work-dir', help='where evaluation logs go')
    p.add_argument('--out', help='detection: a .pkl of raw predictions; segmentation / depth: '
                                 'a directory for predicted maps')
    p.add_argument('--show-dir', help='write one labelled "ground truth | prediction" png per '
                                       'test image here')
    p.add_argument('--tta', action='store_true', help='test-time augmentation (tta_model / '
                                                      'tta_pipeline of the config)')
    p.add_argument('--cfg-options', nargs='+', action=cfg_options_action(),
                   help='override config fields')
    p.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    p.add_argument('--local_rank', '--local-rank', type=int, default=0)
    add_user_arguments(p, training=False)
    return p


def _enable_visualization(cfg, show_dir: str) -> None:
    """``--show-dir``: one labelled ``ground truth | prediction`` png per test image in
    ``show_dir`` for every task (:class:`densekit.mm.visualization.PanelVisualizationHook` in
    place of the config's visualization hook; the depth hook's ``max_depth`` is kept)."""
    hooks = cfg.setdefault('default_hooks', {})
    old = hooks.get('visualization') or {}
    panel = dict(type='PanelVisualizationHook', out_dir=osp.abspath(show_dir))
    for key in ('score_thr', 'max_depth'):
        if old.get(key) is not None:
            panel[key] = old[key]
    hooks['visualization'] = panel


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
    apply_user_arguments(cfg, args)
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
    runner = run_explained(cfg, lambda: build_runner(cfg))
    from densekit.mm.hooks import CheckpointCoversModelHook
    runner.register_hook(CheckpointCoversModelHook())
    metrics = run_explained(cfg, runner.test)
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
