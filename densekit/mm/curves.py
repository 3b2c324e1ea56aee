"""Loss / learning-rate / metric curves of a run, drawn from the scalars mmengine logs.

mmengine's ``LocalVisBackend`` appends one json object per logged step to
``<work_dir>/<timestamp>/vis_data/scalars.json``: training records (``loss``, ``loss_*``, ``lr``,
``iter``, ``step``) and validation records (the metrics, with ``step`` = the epoch or iteration).
:func:`plot_curves` draws them with matplotlib alone; :class:`CurvesHook` redraws
``<work_dir>/curves.png`` after each validation (``tools/train.py`` adds it unless the config
sets ``plot_curves = False``).
"""
from __future__ import annotations

import glob
import json
import os
import os.path as osp
from typing import Iterable, Sequence

from mmengine.hooks import Hook

# training scalars that are bookkeeping, not curves
_SKIP = {'step', 'iter', 'epoch', 'time', 'data_time', 'memory', 'base_lr'}


def read_scalars(path: str) -> tuple[list[dict], list[dict]]:
    """The training and the validation records of a ``scalars.json``."""
    train, val = [], []
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            rec = json.loads(line)
            (train if any(k.startswith('loss') or k == 'lr' for k in rec) else val).append(rec)
    return train, val


def find_scalars(work_dir: str) -> str:
    """The newest ``vis_data/scalars.json`` under ``work_dir`` (or ``work_dir`` itself if a file)."""
    if osp.isfile(work_dir):
        return work_dir
    found = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')) + \
        glob.glob(osp.join(work_dir, 'vis_data', 'scalars.json'))
    if not found:
        raise FileNotFoundError(f'no vis_data/scalars.json under {work_dir} (the run needs '
                                "LocalVisBackend in visualizer.vis_backends)")
    return max(found, key=osp.getmtime)


def plot_curves(scalars: str, out: str, keys: Sequence[str] | None = None) -> list[str]:
    """Draws the curves of ``scalars`` (a ``scalars.json``) into the PNG ``out``: losses, learning
    rate and validation metrics in separate panels. ``keys`` limits the curves; returns the keys
    drawn."""
    import matplotlib
    matplotlib.use('Agg', force=False)
    import matplotlib.pyplot as plt

    train, val = read_scalars(scalars)
    by_epoch = any('epoch' in r for r in train)
    panels: list[tuple[str, str, list[dict], list[str]]] = []
    losses = _keys(train, lambda k: k.startswith('loss') or k.endswith('_loss'), keys)
    lrs = _keys(train, lambda k: k == 'lr' or k.endswith('_lr'), keys)
    metrics = _keys(val, lambda k: k not in _SKIP and isinstance(val[0].get(k), (int, float))
                    if val else False, keys)
    if losses:
        panels.append(('loss', 'iteration', train, losses))
    if lrs:
        panels.append(('learning rate', 'iteration', train, lrs))
    if metrics:
        panels.append(('validation', 'epoch' if by_epoch else 'iteration', val, metrics))
    if not panels:
        raise ValueError(f'{scalars} has no {"of the keys " + str(list(keys)) if keys else "curve"}'
                         ' to draw')
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (title, xlabel, records, names) in zip(axes[0], panels):
        for name in names:
            pts = [(r.get('step', r.get('iter')), r[name]) for r in records
                   if isinstance(r.get(name), (int, float))]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker='o' if len(pts) < 20 else None, label=name)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return [n for *_, names in panels for n in names]


def _keys(records: list[dict], want, only: Iterable[str] | None) -> list[str]:
    seen: dict[str, None] = {}
    for r in records:
        for k in r:
            if k not in _SKIP and want(k) and (only is None or k in only):
                seen[k] = None
    return list(seen)


class CurvesHook(Hook):
    """Redraws ``<work_dir>/<filename>`` from the run's ``scalars.json`` after each validation.

    Runs after the ``LoggerHook`` wrote the validation metrics. Without ``LocalVisBackend`` (no
    ``scalars.json``) it does nothing.
    """

    priority = 'LOW'

    def __init__(self, filename: str = 'curves.png') -> None:
        self.filename = filename

    def after_val_epoch(self, runner, metrics=None) -> None:
        if runner.rank != 0:
            return
        path = osp.join(runner.log_dir, 'vis_data', 'scalars.json')
        if not osp.isfile(path):
            return
        try:
            plot_curves(path, osp.join(runner.work_dir, self.filename))
        except ValueError:  # nothing to draw yet
            pass


def register() -> None:
    from mmengine.registry import HOOKS

    from densekit.mm.registry import register as _register
    _register(HOOKS, CurvesHook)
