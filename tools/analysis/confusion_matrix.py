"""Confusion matrix of a model's test predictions (detection or semantic segmentation).

    python tools/analysis/confusion_matrix.py CONFIG RESULTS [--out confusion.png]
        [--score-thr 0.3] [--iou-thr 0.5] [--data-root DIR] [--cfg-options k=v ...]

RESULTS is what ``tools/test.py CONFIG CKPT --out RESULTS`` wrote: a ``.pkl`` of detections
(mmdet scope) or a folder of predicted label PNGs (mmseg scope). The ground truth is read from the
config's test dataset.

* Detection: rows are ground-truth classes plus "background" (a prediction that matches no
  object), columns predicted classes plus "background" (an object no prediction found).
  Predictions above ``--score-thr`` are matched to objects one-to-one, highest score first, each
  to the unmatched object of any class with the largest IoU >= ``--iou-thr``.
* Segmentation: pixel counts, rows ground truth, columns prediction; ignored pixels are left out.

The PNG shows each row normalised to 1 (with the counts when there are at most 30 classes); the
counts are also written as ``.csv`` beside it.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import numpy as np  # noqa: E402


def parse_args(argv=None):
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config')
    p.add_argument('results', help='tools/test.py --out: a .pkl (detection) or a folder (segmentation)')
    p.add_argument('--out', default='confusion_matrix.png', help='PNG to write (and .csv)')
    p.add_argument('--score-thr', type=float, default=0.3)
    p.add_argument('--iou-thr', type=float, default=0.5)
    p.add_argument('--data-root', help='as tools/test.py --data-root')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config fields')
    return p.parse_args(argv)


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None] - inter, 1e-9)


def detection_matrix(gts, preds, num_classes: int, score_thr: float, iou_thr: float) -> np.ndarray:
    """``gts`` / ``preds``: per image ``(boxes [N, 4] xyxy, labels [N])`` and
    ``(boxes, labels, scores)``; returns the ``(C + 1) x (C + 1)`` count matrix."""
    bg = num_classes
    m = np.zeros((num_classes + 1, num_classes + 1), np.int64)
    for (gb, gl), (pb, pl, ps) in zip(gts, preds):
        keep = ps >= score_thr
        pb, pl, ps = pb[keep], pl[keep], ps[keep]
        order = np.argsort(-ps, kind='stable')
        iou = _box_iou(pb[order], gb) if len(gb) and len(pb) else np.zeros((len(pb), len(gb)))
        taken = np.zeros(len(gb), bool)
        for row, j in enumerate(order):
            cand = np.where(~taken & (iou[row] >= iou_thr))[0] if len(gb) else []
            if len(cand):
                i = cand[np.argmax(iou[row, cand])]
                taken[i] = True
                m[gl[i], pl[j]] += 1
            else:
                m[bg, pl[j]] += 1
        for i in np.where(~taken)[0]:
            m[gl[i], bg] += 1
    return m


def _detection(cfg, dataset, results: str, args) -> tuple[np.ndarray, list[str]]:
    import pickle
    with open(results, 'rb') as fh:
        dumped = pickle.load(fh)  # noqa: S301  (the user's own tools/test.py output)
    by_path = {d['img_path']: d['pred_instances'] for d in dumped}
    gts, preds = [], []
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        if info['img_path'] not in by_path:
            raise KeyError(f"{results} has no prediction for {info['img_path']}: was it written by "
                           f'tools/test.py with this config?')
        inst = [x for x in info['instances'] if not x.get('ignore_flag', 0)]
        gts.append((np.array([x['bbox'] for x in inst], np.float64).reshape(-1, 4),
                    np.array([x['bbox_label'] for x in inst], np.int64)))
        p = by_path[info['img_path']]
        preds.append((np.asarray(p['bboxes'], np.float64).reshape(-1, 4),
                      np.asarray(p['labels'], np.int64), np.asarray(p['scores'], np.float64)))
    classes = list(dataset.metainfo['classes'])
    return detection_matrix(gts, preds, len(classes), args.score_thr, args.iou_thr), \
        classes + ['background']


def _segmentation(cfg, dataset, results: str) -> tuple[np.ndarray, list[str]]:
    from PIL import Image
    classes = list(dataset.metainfo['classes'])
    n = len(classes)
    reduce_zero = bool(getattr(dataset, 'reduce_zero_label', False))
    m = np.zeros((n, n), np.int64)
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        name = osp.splitext(osp.basename(info['img_path']))[0] + '.png'
        path = osp.join(results, name)
        if not osp.isfile(path):
            raise FileNotFoundError(f'{path} does not exist: {results} should hold the label PNGs '
                                    'of tools/test.py --out for this config')
        gt = np.array(Image.open(info['seg_map_path'])).astype(np.int64)
        pred = np.array(Image.open(path)).astype(np.int64)
        if reduce_zero:  # 0 is "unlabelled"; IoUMetric wrote the predictions shifted by one
            gt = np.where(gt == 0, 255, gt - 1)
            pred = pred - 1
        valid = (gt >= 0) & (gt < n) & (pred >= 0) & (pred < n)
        m += np.bincount(gt[valid] * n + pred[valid], minlength=n * n).reshape(n, n)
    return m, classes


def plot(m: np.ndarray, names: list[str], out: str, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg', force=False)
    import matplotlib.pyplot as plt
    norm = m / np.maximum(m.sum(1, keepdims=True), 1)
    size = max(4.0, 0.45 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(norm, cmap='Blues', vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel('prediction')
    ax.set_ylabel('ground truth')
    ax.set_title(title)
    if len(names) <= 30:
        for (r, c), v in np.ndenumerate(m):
            if v:
                ax.text(c, r, str(v), ha='center', va='center', fontsize=6,
                        color='white' if norm[r, c] > 0.5 else 'black')
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv=None) -> None:
    args = parse_args(argv)
    from mmengine.registry import DATASETS, init_default_scope

    import densekit  # noqa: F401
    from densekit.mm.runner import apply_user_arguments, load_config
    cfg = load_config(args.config, args.cfg_options)
    args.max_iters = args.max_epochs = None
    apply_user_arguments(cfg, args)
    scope = cfg.get('default_scope', 'mmdet')
    init_default_scope(scope)
    dataset = DATASETS.build(dict(cfg.test_dataloader.dataset, pipeline=[]))
    if scope == 'mmdet':
        m, names = _detection(cfg, dataset, args.results, args)
        title = f'detections (score >= {args.score_thr}, IoU >= {args.iou_thr})'
    else:
        m, names = _segmentation(cfg, dataset, args.results)
        title = 'pixels'
    plot(m, names, args.out, title)
    csv = osp.splitext(args.out)[0] + '.csv'
    with open(csv, 'w') as fh:
        fh.write('ground truth \\ prediction,' + ','.join(names) + '\n')
        for name, row in zip(names, m):
            fh.write(name + ',' + ','.join(map(str, row)) + '\n')
    print(f'{args.out}, {csv}: {len(names)} x {len(names)}, {int(m.sum())} counted')


if __name__ == '__main__':
    main()
