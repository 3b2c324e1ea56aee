"""One picture layout for every task: ``ground truth | prediction``, labelled.

:func:`render_panels` draws a data sample of any densekit task -- detection (boxes), instance
segmentation (boxes and masks), semantic segmentation (label map), panoptic segmentation
(segments) and depth (colour-mapped, with a colour bar) -- as::

    +----------------+----------------+
    |  ground truth  |   prediction   |    label strip, LABEL_HEIGHT px
    +----------------+----------------+
    |    GT panel    |   pred panel   |    the image size times an integer factor
    +----------------+----------------+
    |     colour bar (depth only)      |   COLORBAR_HEIGHT px
    +---------------------------------+

Both panels are drawn over (detection / segmentation) or instead of (depth) the input image at
its original size, enlarged by an integer factor when it is narrower than ``MIN_PANEL_WIDTH``
so that the labels stay legible. A sample without ground truth gets an empty, labelled panel.

:class:`PanelVisualizationHook` writes these pictures: ``tools/test.py --show-dir D`` puts one
``D/<image name>.png`` per test image (the same flat layout for every task), and a config can
draw the first few validation images of its last validation (the quickstart's predictions).
"""
from __future__ import annotations

import os
import os.path as osp
from typing import Sequence

import cv2
import numpy as np
from mmengine.hooks import Hook

GT_LABEL, PRED_LABEL = 'ground truth', 'prediction'
LABEL_HEIGHT = 20
COLORBAR_HEIGHT = 28
MIN_PANEL_WIDTH = 160
# mmdet's panoptic encoding: segment value = label + instance_id * INSTANCE_OFFSET
INSTANCE_OFFSET = 1000
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def palette(n: int) -> np.ndarray:
    """``n`` distinct RGB colours (uint8 ``[n, 3]``): hues spread by the golden ratio."""
    hues = (np.arange(n) * 0.618033988749895 % 1.0 * 180).astype(np.uint8)
    hsv = np.stack([hues, np.full(n, 200, np.uint8), np.full(n, 255, np.uint8)], 1)[None]
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0]


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, 'detach') else np.asarray(x)


def _colours(meta: dict, n: int) -> np.ndarray:
    pal = meta.get('palette') if meta else None
    if pal is not None and len(pal) >= n:
        return np.asarray(pal, dtype=np.uint8).reshape(-1, 3)
    return palette(max(n, 1))


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float,
          colour=(255, 255, 255), bg=(0, 0, 0)) -> None:
    """``text`` with its baseline-left corner at ``org``, on a filled box (legible anywhere)."""
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, 1)
    x, y = org
    x = int(np.clip(x, 0, max(img.shape[1] - tw - 2, 0)))
    y = int(np.clip(y, th + 2, img.shape[0] - base))
    cv2.rectangle(img, (x, y - th - 2), (x + tw + 2, y + base), bg, -1)
    cv2.putText(img, text, (x + 1, y - 1), _FONT, scale, colour, 1, cv2.LINE_AA)


def _resize_nearest(m: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if m.shape[:2] == tuple(hw):
        return m
    return cv2.resize(m, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)


def _masks(masks, hw: tuple[int, int]) -> np.ndarray | None:
    """``[N, H, W]`` bool masks at ``hw`` from a tensor / BitmapMasks / PolygonMasks."""
    if masks is None:
        return None
    if hasattr(masks, 'to_ndarray'):
        masks = masks.to_ndarray()
    m = _np(masks).astype(np.uint8)
    if m.ndim != 3 or len(m) == 0:
        return None
    if m.shape[1:] != tuple(hw):
        m = np.stack([_resize_nearest(x, hw) for x in m])
    return m.astype(bool)


def _draw_instances(img: np.ndarray, inst, meta: dict, scale: int, score_thr: float,
                    ori_hw: tuple[int, int], to_ori: np.ndarray | None) -> np.ndarray:
    """Boxes, masks and ``class [score]`` of ``inst`` over ``img`` (already scaled)."""
    classes = list((meta or {}).get('classes') or ())
    out = img.copy()
    if inst is None or len(inst) == 0:
        return out
    labels = _np(inst.labels).astype(int)
    boxes = _np(inst.bboxes).astype(np.float64).reshape(-1, 4) if 'bboxes' in inst else None
    if boxes is not None and to_ori is not None:  # ground truth loaded before a Resize
        boxes = boxes / np.tile(to_ori, 2)
    scores = _np(inst.scores) if 'scores' in inst else None
    keep = np.ones(len(labels), bool) if scores is None else scores >= score_thr
    cols = _colours(meta, max(len(classes), int(labels.max(initial=0)) + 1))
    masks = _masks(inst.masks, ori_hw) if 'masks' in inst else None
    if masks is not None:
        overlay = out.astype(np.float32)
        for k in np.flatnonzero(keep):
            m = _resize_nearest(masks[k].astype(np.uint8), out.shape[:2]).astype(bool)
            overlay[m] = 0.45 * overlay[m] + 0.55 * cols[labels[k]]
            contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL,
                                           cv2.CHAIN_APPROX_SIMPLE)
            out[:] = np.clip(overlay, 0, 255).astype(np.uint8)
            cv2.drawContours(out, contours, -1, tuple(int(c) for c in cols[labels[k]]), 1)
            overlay = out.astype(np.float32)
    if boxes is None:
        return out
    font = 0.3 + 0.05 * scale
    for k in np.flatnonzero(keep):
        x0, y0, x1, y1 = (boxes[k] * scale).round().astype(int)
        colour = tuple(int(c) for c in cols[labels[k]])
        cv2.rectangle(out, (x0, y0), (x1, y1), colour, max(1, scale // 2))
        name = classes[labels[k]] if labels[k] < len(classes) else str(labels[k])
        text = name if scores is None else f'{name} {scores[k]:.2f}'
        _text(out, text, (x0, y0 - 1), font, bg=colour)
    return out


def _draw_label_map(img: np.ndarray, labels: np.ndarray, colours: np.ndarray,
                    ignore: Sequence[int] = (255,)) -> np.ndarray:
    """``img`` blended with the colour of each pixel's label; ignored labels stay uncoloured."""
    labels = _resize_nearest(labels.astype(np.int64), img.shape[:2])
    valid = (labels >= 0) & (labels < len(colours)) & ~np.isin(labels, list(ignore))
    out = img.astype(np.float32)
    out[valid] = 0.4 * out[valid] + 0.6 * colours[labels[valid]]
    # Region borders in black: neighbouring segments of one class stay apart.
    edges = np.zeros(labels.shape, bool)
    edges[:-1] |= labels[:-1] != labels[1:]
    edges[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    out[edges] = 0
    return out.astype(np.uint8)


def _panoptic_colours(ids: np.ndarray, meta: dict, num_classes: int) -> tuple[np.ndarray, dict]:
    """Per-segment colours: the class colour, instances of a class shifted in brightness."""
    cols = _colours(meta, num_classes + 1)
    table = {}
    for seg in np.unique(ids):
        label, inst = int(seg) % INSTANCE_OFFSET, int(seg) // INSTANCE_OFFSET
        if label >= num_classes:
            continue  # VOID
        c = cols[label].astype(np.float32) * (1.0 - 0.15 * (inst % 4))
        table[int(seg)] = np.clip(c, 0, 255)
    return cols, table


def _draw_panoptic(img: np.ndarray, ids: np.ndarray, meta: dict) -> np.ndarray:
    num_classes = len((meta or {}).get('classes') or ()) or int(ids.max() % INSTANCE_OFFSET) + 1
    ids = _resize_nearest(ids.astype(np.int64), img.shape[:2])
    _, table = _panoptic_colours(ids, meta, num_classes)
    # Segment index map -> colours through _draw_label_map (segment borders included).
    order = sorted(table)
    index = np.full(ids.shape, 255, np.int64)
    for k, seg in enumerate(order):
        index[ids == seg] = k
    colours = np.stack([table[s] for s in order]) if order else np.zeros((0, 3), np.float32)
    return _draw_label_map(img, index, colours, ignore=(255,) if len(order) <= 255 else ())


def colorbar(width: int, height: int, vmin: float, vmax: float, colormap: str = 'turbo',
             unit: str = 'm') -> np.ndarray:
    """A horizontal colour bar (RGB uint8 ``[height, width, 3]``) with its end values."""
    from densekit.mm.depth.visualization import colorize_depth
    bar_h = max(height // 2, 4)
    ramp = np.tile(np.linspace(vmin, vmax, width, dtype=np.float32), (bar_h, 1))
    # colorize_depth paints depth <= 0 black (missing); the ramp starts just above.
    ramp = np.maximum(ramp, vmin + 1e-6 * max(vmax - vmin, 1.0))
    bar = np.zeros((height, width, 3), np.uint8)
    bar[:bar_h] = colorize_depth(ramp, vmax, vmin, colormap)
    scale = 0.35
    lo, mid, hi = (f'{v:.3g} {unit}' for v in (vmin, (vmin + vmax) / 2, vmax))
    (tw, _), _ = cv2.getTextSize(hi, _FONT, scale, 1)
    (mw, _), _ = cv2.getTextSize(mid, _FONT, scale, 1)
    y = height - 3
    cv2.putText(bar, lo, (2, y), _FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)
    cv2.putText(bar, mid, (max((width - mw) // 2, 0), y), _FONT, scale, (255, 255, 255), 1,
                cv2.LINE_AA)
    cv2.putText(bar, hi, (max(width - tw - 2, 0), y), _FONT, scale, (255, 255, 255), 1,
                cv2.LINE_AA)
    return bar


def label_strip(width: int, text: str) -> np.ndarray:
    """The ``LABEL_HEIGHT`` px caption strip above a panel ``width`` px wide."""
    strip = np.full((LABEL_HEIGHT, width, 3), 32, np.uint8)
    scale = 0.5
    (tw, th), _ = cv2.getTextSize(text, _FONT, scale, 1)
    while tw > width - 4 and scale > 0.25:
        scale -= 0.05
        (tw, th), _ = cv2.getTextSize(text, _FONT, scale, 1)
    cv2.putText(strip, text, (max((width - tw) // 2, 1), (LABEL_HEIGHT + th) // 2), _FONT, scale,
                (255, 255, 255), 1, cv2.LINE_AA)
    return strip


def panel_scale(width: int) -> int:
    """The integer enlargement of an image ``width`` px wide (1 unless narrower than
    ``MIN_PANEL_WIDTH``)."""
    return max(1, -(-MIN_PANEL_WIDTH // max(width, 1)))


def render_panels(image: np.ndarray | None, sample, meta: dict | None = None,
                  score_thr: float = 0.3, max_depth: float | None = None,
                  colormap: str = 'turbo') -> np.ndarray:
    """The labelled ``ground truth | prediction`` picture of one data sample.

    Args:
        image: RGB uint8 ``[H, W, 3]`` input at the sample's ``ori_shape`` (``None``: grey).
        sample: an mmdet ``DetDataSample`` or mmseg ``SegDataSample`` with its prediction
            (``pred_instances`` / ``pred_sem_seg`` / ``pred_panoptic_seg`` / ``pred_depth_map``)
            and, where the pipeline loaded it, the ground truth (``gt_*``).
        meta: dataset meta (``classes``, ``palette``, depth ``max_depth``).
        score_thr: detections scoring below it are not drawn.
        max_depth: depth colour scale top (default: ``meta['max_depth']``, else the largest value).
        colormap: depth colormap (see :func:`densekit.mm.depth.colorize_depth`).

    Returns:
        RGB uint8 ``[LABEL_HEIGHT + s H (+ COLORBAR_HEIGHT for depth), 2 s W, 3]``, ``s`` =
        :func:`panel_scale` of ``W``.
    """
    meta = dict(meta or {})
    depth = 'pred_depth_map' in sample
    if depth:
        pred_d = _np(sample.pred_depth_map.data)[0].astype(np.float32)
        hw = pred_d.shape
    elif image is not None:
        hw = image.shape[:2]
    else:
        hw = tuple(sample.metainfo.get('ori_shape', (64, 64)))[:2]
    s = panel_scale(hw[1])
    size = (hw[0] * s, hw[1] * s)
    if image is None:
        base = np.full((*size, 3), 96, np.uint8)
    else:
        if image.shape[:2] != tuple(hw):
            image = cv2.resize(image, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)
        base = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_NEAREST) \
            if s > 1 else image.copy()
    blank = (base.astype(np.float32) * 0.35).astype(np.uint8)  # no ground truth to draw
    bar = None
    if depth:
        top = max_depth or meta.get('max_depth') or float(pred_d.max(initial=0)) or 1.0
        from densekit.mm.depth.visualization import colorize_depth
        up = lambda d: _resize_nearest(d, size)  # noqa: E731
        pred = up(colorize_depth(pred_d, top, colormap=colormap))
        gt = blank
        if 'gt_depth_map' in sample:
            gt_d = _np(sample.gt_depth_map.data)[0].astype(np.float32)
            gt = up(colorize_depth(_resize_nearest(gt_d, hw), top, colormap=colormap))
        bar = colorbar(2 * size[1], COLORBAR_HEIGHT, 0.0, float(top), colormap)
    elif 'pred_panoptic_seg' in sample:
        pred = _draw_panoptic(base, _np(sample.pred_panoptic_seg.sem_seg)[0], meta)
        gt = _draw_panoptic(base, _np(sample.gt_panoptic_seg.sem_seg)[0], meta) \
            if 'gt_panoptic_seg' in sample else blank
    elif 'pred_sem_seg' in sample:
        n = len(meta.get('classes') or ()) or int(_np(sample.pred_sem_seg.data).max()) + 1
        cols = _colours(meta, n).astype(np.float32)
        pred = _draw_label_map(base, _np(sample.pred_sem_seg.data)[0], cols)
        gt = _draw_label_map(base, _np(sample.gt_sem_seg.data)[0], cols) \
            if 'gt_sem_seg' in sample else blank
    elif 'pred_instances' in sample:
        gt_inst = sample.gt_instances if 'gt_instances' in sample else None
        to_ori = None  # ground truth loaded before a Resize is at the resized scale
        if gt_inst is not None and 'masks' in gt_inst and hasattr(gt_inst.masks, 'height') \
                and (gt_inst.masks.height, gt_inst.masks.width) != tuple(hw) \
                and 'scale_factor' in sample.metainfo:
            to_ori = np.asarray(sample.metainfo['scale_factor'], np.float64)
        pred = _draw_instances(base, sample.pred_instances, meta, s, score_thr, hw, None)
        gt = _draw_instances(base, gt_inst, meta, s, 0.0, hw, to_ori) \
            if gt_inst is not None else blank
    else:
        raise ValueError(f'render_panels: the sample has no prediction to draw '
                         f'(keys: {sorted(sample.keys())})')
    top_row = np.concatenate([label_strip(size[1], GT_LABEL),
                              label_strip(size[1], PRED_LABEL)], axis=1)
    pred = pred.copy()
    pred[:, 0] = 255  # a white line between the panels (segment maps would run together)
    rows = [top_row, np.concatenate([gt, pred], axis=1)]
    if bar is not None:
        rows.append(bar)
    return np.concatenate(rows, axis=0)


def read_rgb(path: str) -> np.ndarray | None:
    """The RGB image at ``path`` (mmengine's file backends); ``None`` when it cannot be read."""
    import mmcv
    from mmengine import fileio
    try:
        content = fileio.get(path)
    except (FileNotFoundError, OSError):
        return None
    img = mmcv.imfrombytes(content, flag='color', backend='cv2')
    return None if img is None else np.ascontiguousarray(img[:, :, ::-1])


class PanelVisualizationHook(Hook):
    """Writes :func:`render_panels` pictures of test (and optionally validation) samples.

    Interface: ``tools/test.py --show-dir D`` replaces the config's visualization hook by this
    one with ``out_dir=abspath(D)``: one ``D/<image name>.png`` per test image, whatever the task.

    Args:
        out_dir: output folder (relative paths are under ``runner.work_dir``).
        score_thr: detections scoring below it are not drawn.
        max_images: draw at most this many images per test / validation pass (``None``: all).
        draw_test: draw the test samples.
        draw_val: draw the first ``max_images`` samples of the last validation of training
            (``runner.iter == runner.max_iters`` or the last epoch) and log their paths.
        max_depth: depth colour scale top (default: the dataset's ``max_depth``).
    """

    priority = 'NORMAL'

    def __init__(self, out_dir: str = 'show', score_thr: float = 0.3,
                 max_images: int | None = None, draw_test: bool = True, draw_val: bool = False,
                 max_depth: float | None = None) -> None:
        if max_images is not None and max_images < 1:
            raise ValueError(f'PanelVisualizationHook: max_images={max_images} must be >= 1')
        self.out_dir, self.score_thr, self.max_images = out_dir, score_thr, max_images
        self.draw_test, self.draw_val, self.max_depth = draw_test, draw_val, max_depth
        self._count = 0
        self.written: list[str] = []

    def _meta(self, runner, loader: str) -> dict:
        meta = getattr(getattr(getattr(runner, loader, None), 'dataset', None), 'metainfo', None)
        if meta is None:
            model = getattr(runner, 'model', None)
            meta = getattr(getattr(model, 'module', model), 'dataset_meta', None)
        return dict(meta or {})

    def _draw(self, runner, outputs, loader: str) -> None:
        out_dir = osp.join(runner.work_dir, self.out_dir)  # an absolute out_dir stays as it is
        meta = None
        for sample in outputs or []:
            if self.max_images is not None and self._count >= self.max_images:
                return
            self._count += 1
            meta = meta if meta is not None else self._meta(runner, loader)
            path = sample.metainfo.get('img_path')
            image = read_rgb(path) if path and 'pred_depth_map' not in sample else None
            drawing = render_panels(image, sample, meta, self.score_thr, self.max_depth)
            name = osp.splitext(osp.basename(path))[0] if path else f'{self._count:06d}'
            os.makedirs(out_dir, exist_ok=True)
            file = osp.join(out_dir, name + '.png')
            cv2.imwrite(file, drawing[:, :, ::-1])
            self.written.append(file)

    def _last_val(self, runner) -> bool:
        from mmengine.runner import BaseLoop
        loop = getattr(runner, '_train_loop', None)
        if not isinstance(loop, BaseLoop):
            return False  # validation outside training (runner.val())
        if 'Epoch' in type(loop).__name__:
            return runner.epoch >= loop.max_epochs
        return runner.iter >= loop.max_iters

    def before_test_epoch(self, runner) -> None:
        self._count = 0

    def before_val_epoch(self, runner) -> None:
        self._count = 0

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.draw_test:
            self._draw(runner, outputs, 'test_dataloader')

    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.draw_val and self._last_val(runner):
            self._draw(runner, outputs, 'val_dataloader')

    def after_val_epoch(self, runner, metrics=None) -> None:
        if self.draw_val and self._last_val(runner) and self.written:
            runner.logger.info('prediction pictures (ground truth | prediction): '
                               + ', '.join(self.written))


def register() -> None:
    from mmengine.registry import HOOKS

    from densekit.mm.registry import register as _register
    _register(HOOKS, PanelVisualizationHook)
