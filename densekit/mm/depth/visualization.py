"""Depth visualisation: a fixed-scale colour rendering and the hook that draws
``input | prediction | ground truth`` during validation and testing."""
from __future__ import annotations

import os
import os.path as osp

import cv2
import mmcv
import numpy as np
from mmengine import fileio
from mmengine.hooks import Hook


_COLORMAPS = dict(turbo=cv2.COLORMAP_TURBO, magma=cv2.COLORMAP_MAGMA, inferno=cv2.COLORMAP_INFERNO,
                  viridis=cv2.COLORMAP_VIRIDIS, jet=cv2.COLORMAP_JET)


def colorize_depth(depth: np.ndarray, max_depth: float, min_depth: float = 0.0,
                   colormap: str = 'turbo') -> np.ndarray:
    """uint8 RGB ``[H, W, 3]`` rendering of a depth map on a fixed ``[min_depth, max_depth]``
    scale (near = low end of the colormap); pixels with depth <= 0 (missing) are black."""
    if colormap not in _COLORMAPS:
        raise ValueError(f"colorize_depth: colormap={colormap!r} must be one of {sorted(_COLORMAPS)}")
    d = np.asarray(depth, dtype=np.float32)
    norm = np.clip((d - min_depth) / max(max_depth - min_depth, 1e-6), 0, 1)
    bgr = cv2.applyColorMap((norm * 255).astype(np.uint8), _COLORMAPS[colormap])
    bgr[d <= 0] = 0
    return bgr[:, :, ::-1].copy()


def _read_rgb(path: str) -> np.ndarray | None:
    """The RGB image at ``path`` through mmengine's file backends; ``None`` when it is gone."""
    try:
        content = fileio.get(path)
    except FileNotFoundError:
        return None
    img = mmcv.imfrombytes(content, flag='color', backend='cv2')
    return None if img is None else img[:, :, ::-1]


class DepthVisualizationHook(Hook):
    """Draws ``input | prediction | ground truth`` side by side during validation and testing.

    Interface (what ``tools/test.py --show-dir D`` sets): ``draw=True``, ``interval=1`` and
    ``show_dir=abspath(D)``. With ``show_dir``, each test image is written to
    ``<show_dir>/<image name>.png``; without it the drawing goes to the runner's visualizer
    (``visualizer.add_image``: with a ``LocalVisBackend``, ``<save_dir>/vis_data/vis_image/``).
    During validation the first sample of every ``interval``-th batch goes to the visualizer.

    Args:
        draw: draw at all (off by default, like mmseg's ``SegVisualizationHook``).
        interval: validation batches between drawings; in testing every ``interval``-th sample.
        show_dir: output folder for test drawings (relative paths are under ``runner.work_dir``).
        max_depth: top of the colour scale; ``None`` takes the dataset's ``max_depth``.
        colormap: one of ``turbo``, ``magma``, ``inferno``, ``viridis``, ``jet``.
    """

    priority = 'NORMAL'

    def __init__(self, draw: bool = False, interval: int = 50, show_dir: str | None = None,
                 max_depth: float | None = None, colormap: str = 'turbo') -> None:
        if interval < 1:
            raise ValueError(f"DepthVisualizationHook: interval={interval} must be >= 1")
        if colormap not in _COLORMAPS:
            raise ValueError(f"DepthVisualizationHook: colormap={colormap!r} must be one of "
                             f"{sorted(_COLORMAPS)}")
        self.draw, self.interval, self.show_dir = draw, interval, show_dir
        self.max_depth, self.colormap = max_depth, colormap
        self._test_index = 0

    def _scale(self, runner, loader_name: str, ds) -> float:
        if self.max_depth is not None:
            return self.max_depth
        loader = getattr(runner, loader_name, None)
        meta = getattr(getattr(loader, 'dataset', None), 'metainfo', None) or {}
        if 'max_depth' in meta:
            return float(meta['max_depth'])
        return float(ds.pred_depth_map.data.max())

    def render(self, ds, max_depth: float) -> np.ndarray:
        """RGB uint8 ``[H, W * k, 3]``: the input image, the prediction and (if any) the ground truth."""
        pred = ds.pred_depth_map.data[0].float().cpu().numpy()
        img = _read_rgb(ds.img_path) if 'img_path' in ds else None
        panels = []
        if img is not None:
            if img.shape[:2] != pred.shape:
                img = cv2.resize(img, pred.shape[::-1], interpolation=cv2.INTER_LINEAR)
            panels.append(img)
        panels.append(colorize_depth(pred, max_depth, colormap=self.colormap))
        if 'gt_depth_map' in ds:
            gt = ds.gt_depth_map.data[0].float().cpu().numpy()
            if gt.shape == pred.shape:
                panels.append(colorize_depth(gt, max_depth, colormap=self.colormap))
        return np.concatenate(panels, axis=1)

    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not self.draw or not outputs or batch_idx % self.interval:
            return
        ds = outputs[0]
        name = 'val_' + osp.splitext(osp.basename(ds.metainfo.get('img_path', str(batch_idx))))[0]
        runner.visualizer.add_image(name, self.render(ds, self._scale(runner, 'val_dataloader', ds)),
                                    step=runner.iter)

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not self.draw:
            return
        for ds in outputs or []:
            self._test_index += 1
            if (self._test_index - 1) % self.interval:
                continue
            drawing = self.render(ds, self._scale(runner, 'test_dataloader', ds))
            name = osp.splitext(osp.basename(ds.metainfo.get('img_path', f'{self._test_index:06d}')))[0]
            if self.show_dir:
                out = osp.join(runner.work_dir, self.show_dir)  # no-op for an absolute show_dir
                os.makedirs(out, exist_ok=True)
                cv2.imwrite(osp.join(out, name + '.png'), drawing[:, :, ::-1])
            else:
                runner.visualizer.add_image(name, drawing, step=self._test_index)
