"""Deterministic synthetic datasets: the embedded data of the quickstart (no download needed).

Three generators, all densekit's own code and all pure numpy + OpenCV:

* :func:`make_coco_shapes` writes a COCO-format instance segmentation dataset (the layout and
  json fields of Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014): several
  shape classes with real polygon masks, sizes spanning COCO's small / medium / large ranges,
  occlusion (later objects cover earlier ones; every annotation is the *visible* part, possibly
  several polygons; fully covered objects are dropped), and textured backgrounds.
* :func:`make_ade_shapes` writes a semantic segmentation dataset in the ADE20K layout (Zhou et
  al., "Scene Parsing through ADE20K Dataset", CVPR 2017): ``images/{training,validation}/*.jpg``
  and ``annotations/{training,validation}/*.png`` with uint8 labels where 0 means "unlabeled"
  (anti-aliased boundaries and clutter), so configs use ``reduce_zero_label=True`` as for ADE20K.
* :func:`make_coco_panoptic_shapes` writes a panoptic segmentation dataset in the COCO panoptic
  layout (json ``segments_info`` + PNGs of RGB-encoded segment ids): the shape classes as things
  over the sky / ground stuff of the semantic scenes, unlabeled clutter as void.

Scenes are rasterised on a 4x supersampled grid: the image is the coverage-weighted mix of the
layers (anti-aliased edges), polygons are traced on the fine grid (a quarter-pixel accurate
outline), and a semantic label is only given to pixels that a single layer covers entirely (a
panoptic segment takes the pixels its layer covers most of, so that segments tile the image).

Every image is drawn from its own ``numpy.random.SeedSequence((seed, split, index))``: the same
seed gives byte-identical json and identical pixels, whatever the number of images requested.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from densekit.compat.panopticapi.utils import id2rgb

COCO_CLASSES: tuple[str, ...] = ('circle', 'square', 'triangle', 'star', 'ellipse')
"""Categories of the instance dataset; category ids are ``1..len(COCO_CLASSES)`` in this order."""

ADE_CLASSES: tuple[str, ...] = ('sky', 'ground', 'circle', 'square', 'triangle', 'star')
"""Classes of the semantic dataset; stored label ``i + 1`` is class ``i`` (0 is unlabeled)."""

ADE_PALETTE: tuple[tuple[int, int, int], ...] = (
    (70, 130, 180), (152, 251, 152), (220, 20, 60), (255, 165, 0), (0, 0, 142), (119, 11, 32))

PANOPTIC_THINGS: tuple[str, ...] = COCO_CLASSES
"""Thing classes of the panoptic dataset (the shapes of the instance dataset)."""

PANOPTIC_STUFF: tuple[str, ...] = ('sky', 'ground')
"""Stuff classes of the panoptic dataset (the background of the semantic dataset)."""

PANOPTIC_CLASSES: tuple[str, ...] = PANOPTIC_THINGS + PANOPTIC_STUFF
"""Classes of the panoptic dataset, things first (mmdet's panoptic label order)."""

PANOPTIC_CATEGORY_IDS: dict[str, int] = {c: i + 1 for i, c in enumerate(PANOPTIC_CLASSES)}
"""Category id of each panoptic class in the json (``1..len(PANOPTIC_CLASSES)``)."""

# Supersampling factor of the rasterisation grid (see the module docstring).
_SS = 4
_SPLITS = {'train': 0, 'val': 1, 'training': 0, 'validation': 1}


# --------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------

def _regular(n: int, radius: float, angle: float) -> np.ndarray:
    t = angle + np.arange(n) * (2 * math.pi / n)
    return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)


def _circle(rng: np.random.Generator, r: float) -> np.ndarray:
    return _regular(64, r, 0.0)


def _square(rng: np.random.Generator, r: float) -> np.ndarray:
    return _regular(4, r, rng.uniform(0, math.pi / 2))


def _triangle(rng: np.random.Generator, r: float) -> np.ndarray:
    return _regular(3, r, rng.uniform(0, 2 * math.pi / 3))


def _star(rng: np.random.Generator, r: float) -> np.ndarray:
    a = rng.uniform(0, 2 * math.pi / 5)
    outer = _regular(5, r, a)
    # The inner ring is rotated by half a step so that it alternates with the tips.
    inner = _regular(5, 0.45 * r, a + math.pi / 5)
    return np.stack([outer, inner], axis=1).reshape(-1, 2)


def _ellipse(rng: np.random.Generator, r: float) -> np.ndarray:
    # Aspect ratio kept well away from 1 so that an ellipse is never a circle in disguise.
    p = _regular(64, 1.0, 0.0) * np.array([r, r * rng.uniform(0.35, 0.6)])
    a = rng.uniform(0, math.pi)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return p @ rot.T


def _blob(rng: np.random.Generator, r: float) -> np.ndarray:
    # An irregular star-convex outline: clutter that belongs to no class.
    n = 24
    radii = r * np.clip(1 + 0.35 * np.convolve(rng.standard_normal(n + 4), np.ones(5) / 5, 'valid'),
                        0.4, 1.6)
    t = np.arange(n) * (2 * math.pi / n)
    return np.stack([radii * np.cos(t), radii * np.sin(t)], axis=1)


_SHAPES: dict[str, Callable[[np.random.Generator, float], np.ndarray]] = {
    'circle': _circle, 'square': _square, 'triangle': _triangle, 'star': _star,
    'ellipse': _ellipse, 'blob': _blob}


# --------------------------------------------------------------------------------------------
# Textures (float32 HxWx3 in [0, 255])
# --------------------------------------------------------------------------------------------

def _hsv_color(rng: np.random.Generator, sat: tuple[float, float],
               val: tuple[float, float]) -> np.ndarray:
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(*sat) * 255, rng.uniform(*val) * 255]]],
                   dtype=np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _texture(rng: np.random.Generator, h: int, w: int, c0: np.ndarray, c1: np.ndarray,
             kind: str) -> np.ndarray:
    """A two-colour texture of the given kind: noise, gradient, stripes or checker."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 'noise':
        cell = int(rng.integers(4, 16))
        coarse = rng.random((h // cell + 2, w // cell + 2)).astype(np.float32)
        t = cv2.resize(coarse, (w + 2 * cell, h + 2 * cell), interpolation=cv2.INTER_CUBIC)
        t = np.clip(t[cell:cell + h, cell:cell + w], 0, 1)
    elif kind == 'gradient':
        a = rng.uniform(0, 2 * math.pi)
        t = xx * math.cos(a) + yy * math.sin(a)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    elif kind == 'stripes':
        a = rng.uniform(0, math.pi)
        period = rng.uniform(6, 24)
        t = 0.5 + 0.5 * np.sin((xx * math.cos(a) + yy * math.sin(a)) * (2 * math.pi / period))
    elif kind == 'checker':
        cell = int(rng.integers(6, 20))
        t = ((xx // cell + yy // cell) % 2).astype(np.float32)
    else:
        raise ValueError(f"unknown texture kind '{kind}'")
    return c0 + t[..., None] * (c1 - c0)


_BACKGROUNDS = ('noise', 'gradient', 'stripes', 'checker')


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    # Desaturated backgrounds, saturated objects: a contrast the quickstart can learn quickly,
    # while the textures keep it from being a plain colour threshold.
    kind = _BACKGROUNDS[int(rng.integers(len(_BACKGROUNDS)))]
    c0 = _hsv_color(rng, (0.0, 0.35), (0.2, 0.9))
    c1 = _hsv_color(rng, (0.0, 0.35), (0.2, 0.9))
    return _texture(rng, h, w, c0, c1, kind)


def _object_fill(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    c0 = _hsv_color(rng, (0.5, 1.0), (0.45, 1.0))
    # A faint second tone (noise or stripes) so objects are not flat.
    c1 = np.clip(c0 + rng.uniform(-40, 40, size=3).astype(np.float32), 0, 255)
    kind = ('noise', 'stripes', 'gradient')[int(rng.integers(3))]
    return _texture(rng, h, w, c0, c1, kind)


# --------------------------------------------------------------------------------------------
# Rasterisation on the supersampled grid
# --------------------------------------------------------------------------------------------

@dataclass
class _Layer:
    shape: str
    label: int          # category id (COCO) or stored label (ADE); 0 = unlabeled
    polygon: np.ndarray  # (N, 2) x, y in image pixels (continuous coordinates)
    fill: np.ndarray     # (H, W, 3) float32 texture of this layer


def _raster(polygon: np.ndarray, h: int, w: int) -> np.ndarray:
    """Boolean mask on the ``_SS``x grid of a polygon given in image pixel coordinates."""
    m = np.zeros((h * _SS, w * _SS), np.uint8)
    # Fine-grid cell centres sit at (i + 0.5) / _SS; fillPoly fills integer cells.
    pts = np.round(polygon * _SS - 0.5).astype(np.int32)
    cv2.fillPoly(m, [pts], 1, lineType=cv2.LINE_8)
    return m.astype(bool)


def _coverage(idmap: np.ndarray, index: int) -> np.ndarray:
    """Fraction (H, W) of each image pixel covered by layer ``index`` on the fine grid."""
    h, w = idmap.shape[0] // _SS, idmap.shape[1] // _SS
    # INTER_AREA with an integer factor is the exact box average (and much faster than numpy).
    return cv2.resize((idmap == index).astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)


def _compose(background: np.ndarray, idmap: np.ndarray, layers: Sequence[_Layer],
             rng: np.random.Generator, noise_std: float) -> np.ndarray:
    img = background.copy()
    for k, layer in enumerate(layers, start=1):
        cov = _coverage(idmap, k)[..., None]
        if cov.any():
            img = img * (1 - cov) + layer.fill * cov
    img = img + rng.normal(0, noise_std, img.shape).astype(np.float32)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def _has_hole(mask: np.ndarray) -> bool:
    """True when the (fine-grid) mask encloses background, which COCO polygons cannot express."""
    ys, xs = np.nonzero(mask)
    crop = mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    inv = np.pad(~crop, 1, constant_values=True).astype(np.uint8)
    n, _ = cv2.connectedComponents(inv, connectivity=4)
    return n > 2  # label 0 is the mask itself, label 1 the outside


def _polygons(mask: np.ndarray, min_part_area: float) -> list[list[float]]:
    """COCO polygons (image pixel coordinates) of the visible parts of a fine-grid mask."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        if cv2.contourArea(c) < min_part_area * _SS * _SS:
            continue
        c = cv2.approxPolyDP(c, 1.0, True).reshape(-1, 2)
        if len(c) < 3:
            continue
        # Contour points are fine-grid cell centres; map them back to image coordinates.
        xy = (c.astype(np.float64) + 0.5) / _SS
        polys.append([round(float(v), 2) for v in xy.reshape(-1)])
    return polys


def _sample_polygon(rng: np.random.Generator, shape: str, h: int, w: int,
                    size_range: tuple[float, float]) -> np.ndarray:
    side = min(h, w)
    # Log-uniform radius: as many small as large objects (COCO's area ranges all populated).
    r = side * math.exp(rng.uniform(math.log(size_range[0]), math.log(size_range[1])))
    cx = rng.uniform(0.05, 0.95) * w
    cy = rng.uniform(0.05, 0.95) * h
    return _SHAPES[shape](rng, r) + np.array([cx, cy])


# --------------------------------------------------------------------------------------------
# COCO-format instance segmentation
# --------------------------------------------------------------------------------------------

def _place_objects(rng: np.random.Generator, idmap: np.ndarray, layers: list[_Layer], n: int,
                   draw: Callable[[np.random.Generator], tuple[str, int]], h: int, w: int,
                   size_range: tuple[float, float], min_area: float,
                   check_holes: bool) -> np.ndarray:
    """Place up to ``n`` objects over ``idmap`` / ``layers`` (extended in place); the new idmap.

    ``draw(rng)`` gives an object's ``(shape, label)``. A placement is retried (10 tries) when it
    is mostly outside the image or leaves an earlier layer visible as a sliver smaller than
    ``min_area`` pixels or, with ``check_holes``, with a hole.
    """
    for _ in range(n):
        for _attempt in range(10):
            shape, label = draw(rng)
            poly = _sample_polygon(rng, shape, h, w, size_range)
            m = _raster(poly, h, w)
            if m.sum() < min_area * _SS * _SS:
                continue  # mostly outside the image
            new = idmap.copy()
            new[m] = len(layers) + 1
            # Reject a placement that leaves an earlier object as a sliver (visible but too
            # small to annotate) or with a hole (not expressible as COCO polygons). Covering an
            # object completely is allowed: it is then dropped from the annotations.
            ok = True
            for j in np.flatnonzero(np.bincount(idmap[m], minlength=256)[1:]) + 1:
                vis = new == j
                area = vis.sum() / _SS ** 2
                if 0 < area < min_area or (check_holes and area > 0 and _has_hole(vis)):
                    ok = False
                    break
            if ok:
                idmap = new
                layers.append(_Layer(shape, label, poly, _object_fill(rng, h, w)))
                break
    return idmap


def _coco_scene(rng: np.random.Generator, h: int, w: int, max_objects: int,
                size_range: tuple[float, float], min_area: float):
    """One image with its visible-instance annotations (list of dicts without ids)."""
    background = _background(rng, h, w)
    n_target = int(rng.integers(1, max_objects + 1))

    def draw(rng: np.random.Generator) -> tuple[str, int]:
        cls = int(rng.integers(len(COCO_CLASSES)))
        return COCO_CLASSES[cls], cls + 1
    layers: list[_Layer] = []
    idmap = _place_objects(rng, np.zeros((h * _SS, w * _SS), np.uint8), layers, n_target, draw,
                           h, w, size_range, min_area, check_holes=True)
    img = _compose(background, idmap, layers, rng, noise_std=4.0)
    anns = []
    for k, layer in enumerate(layers, start=1):
        vis = idmap == k
        area = vis.sum() / _SS ** 2
        if area == 0:
            continue  # fully occluded
        polys = _polygons(vis, min_part_area=1.0)
        if not polys:
            continue
        xs = np.concatenate([np.asarray(p[0::2]) for p in polys])
        ys = np.concatenate([np.asarray(p[1::2]) for p in polys])
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max(), ys.max()
        anns.append(dict(category_id=layer.label, segmentation=polys, area=round(float(area), 2),
                         bbox=[round(float(x0), 2), round(float(y0), 2),
                               round(float(x1 - x0), 2), round(float(y1 - y0), 2)],
                         iscrowd=0))
    return img, anns


def make_coco_shapes(out_dir: str | Path, split: str = 'train', num_images: int = 200,
                     seed: int = 0, image_size: tuple[int, int] = (160, 160),
                     max_objects: int = 6, size_range: tuple[float, float] = (0.06, 0.42),
                     min_area: float = 12.0) -> Path:
    """Write ``out_dir/{split}/*.jpg`` and ``out_dir/annotations/instances_{split}.json``.

    Args:
        out_dir: dataset root (created).
        split: ``'train'`` or ``'val'`` (seeds the split: val is not a copy of train).
        num_images: number of images.
        seed: base seed; image ``i`` of a split is drawn from ``SeedSequence((seed, split, i))``.
        image_size: ``(height, width)`` in pixels.
        max_objects: at most this many objects are placed per image (at least one).
        size_range: object radius range as a fraction of the shorter image side.
        min_area: smallest visible area, in pixels, of an annotated object.

    Returns:
        The path of the annotation json.
    """
    if split not in ('train', 'val'):
        raise ValueError(f"split must be 'train' or 'val', got '{split}'")
    if num_images < 1:
        raise ValueError(f'num_images must be >= 1, got {num_images}')
    h, w = image_size
    root = Path(out_dir)
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / 'annotations').mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        rng = np.random.default_rng(np.random.SeedSequence((seed, _SPLITS[split], i)))
        img, anns = _coco_scene(rng, h, w, max_objects, size_range, min_area)
        image_id = i + 1
        name = f'{image_id:06d}.jpg'
        _write(root / split / name, img, '.jpg')
        images.append(dict(id=image_id, file_name=name, width=w, height=h))
        for a in anns:
            annotations.append(dict(id=len(annotations) + 1, image_id=image_id, **a))
    coco = dict(
        info=dict(description='densekit synthetic shapes (instance segmentation)',
                  version='1.0', seed=seed, split=split),
        licenses=[],
        images=images,
        annotations=annotations,
        categories=[dict(id=i + 1, name=n, supercategory='shape')
                    for i, n in enumerate(COCO_CLASSES)])
    ann_file = root / 'annotations' / f'instances_{split}.json'
    ann_file.write_text(json.dumps(coco, separators=(',', ':')))
    return ann_file


# --------------------------------------------------------------------------------------------
# ADE20K-layout semantic segmentation
# --------------------------------------------------------------------------------------------

def _sky_ground(rng: np.random.Generator, h: int, w: int, sky: int, ground: int) -> list[_Layer]:
    """The stuff layers: a sky gradient over the whole frame, textured ground below a wavy
    horizon, labelled ``sky`` and ``ground``."""
    sky_fill = _texture(rng, h, w, _hsv_color(rng, (0.3, 0.7), (0.7, 1.0)) * np.array(
        [0.6, 0.8, 1.0], np.float32), _hsv_color(rng, (0.0, 0.2), (0.8, 1.0)), 'gradient')
    horizon = rng.uniform(0.35, 0.65) * h
    xs = np.linspace(-1, w + 1, 33)
    ys = horizon + rng.uniform(2, 0.12 * h) * np.sin(xs * rng.uniform(0.02, 0.08) + rng.uniform(0, 6))
    ground_poly = np.concatenate([np.stack([xs, ys], 1), [[w + 1, h + 1], [-1, h + 1]]])
    ground_fill = _texture(rng, h, w, _hsv_color(rng, (0.3, 0.8), (0.3, 0.7)),
                           _hsv_color(rng, (0.3, 0.8), (0.2, 0.6)),
                           ('noise', 'stripes', 'checker')[int(rng.integers(3))])
    return [_Layer('sky', sky, np.array([[-1, -1], [w + 1, -1], [w + 1, h + 1], [-1, h + 1]],
                                        np.float64), sky_fill),
            _Layer('ground', ground, ground_poly, ground_fill)]


def _ade_scene(rng: np.random.Generator, h: int, w: int, max_objects: int,
               size_range: tuple[float, float]):
    layers = _sky_ground(rng, h, w, ADE_CLASSES.index('sky') + 1, ADE_CLASSES.index('ground') + 1)
    things = [c for c in ADE_CLASSES if c not in ('sky', 'ground')]
    for _ in range(int(rng.integers(1, max_objects + 1))):
        # One object in five is unlabeled clutter (label 0), as ADE20K leaves "other" pixels.
        if rng.random() < 0.2:
            shape, label = 'blob', 0
        else:
            shape = things[int(rng.integers(len(things)))]
            label = ADE_CLASSES.index(shape) + 1
        layers.append(_Layer(shape, label, _sample_polygon(rng, shape, h, w, size_range),
                             _object_fill(rng, h, w)))
    idmap = np.zeros((h * _SS, w * _SS), np.uint8)
    for k, layer in enumerate(layers, start=1):
        idmap[_raster(layer.polygon, h, w)] = k
    img = _compose(np.zeros((h, w, 3), np.float32), idmap, layers, rng, noise_std=4.0)
    # A pixel gets a label only when one layer covers it entirely; mixed edge pixels are 0.
    blocks = idmap.reshape(h, _SS, w, _SS).transpose(0, 2, 1, 3).reshape(h, w, _SS * _SS)
    pure = (blocks == blocks[..., :1]).all(-1)
    lut = np.array([0] + [layer.label for layer in layers], np.uint8)
    label = np.where(pure, lut[blocks[..., 0]], 0).astype(np.uint8)
    return img, label


def make_ade_shapes(out_dir: str | Path, split: str = 'training', num_images: int = 200,
                    seed: int = 0, image_size: tuple[int, int] = (128, 128),
                    max_objects: int = 5, size_range: tuple[float, float] = (0.08, 0.3)) -> Path:
    """Write ``out_dir/images/{split}/*.jpg`` and ``out_dir/annotations/{split}/*.png``.

    Labels are uint8: ``0`` unlabeled (ignored with ``reduce_zero_label=True``), ``i + 1`` is
    ``ADE_CLASSES[i]``.

    Args:
        out_dir: dataset root (created).
        split: ``'training'`` or ``'validation'``.
        num_images: number of images.
        seed: base seed; image ``i`` is drawn from ``SeedSequence((seed, split, i))``.
        image_size: ``(height, width)`` in pixels.
        max_objects: at most this many objects in front of the sky / ground background.
        size_range: object radius range as a fraction of the shorter image side.

    Returns:
        The dataset root.
    """
    if split not in ('training', 'validation'):
        raise ValueError(f"split must be 'training' or 'validation', got '{split}'")
    if num_images < 1:
        raise ValueError(f'num_images must be >= 1, got {num_images}')
    h, w = image_size
    root = Path(out_dir)
    (root / 'images' / split).mkdir(parents=True, exist_ok=True)
    (root / 'annotations' / split).mkdir(parents=True, exist_ok=True)
    prefix = 'train' if split == 'training' else 'val'
    for i in range(num_images):
        rng = np.random.default_rng(np.random.SeedSequence((seed, 2 + _SPLITS[split], i)))
        img, label = _ade_scene(rng, h, w, max_objects, size_range)
        name = f'synth_{prefix}_{i + 1:06d}'
        _write(root / 'images' / split / f'{name}.jpg', img, '.jpg')
        _write(root / 'annotations' / split / f'{name}.png', label, '.png')
    return root


# --------------------------------------------------------------------------------------------
# COCO-panoptic-format panoptic segmentation
# --------------------------------------------------------------------------------------------

def _panoptic_scene(rng: np.random.Generator, h: int, w: int, max_objects: int,
                    size_range: tuple[float, float], min_area: float, clutter: float):
    """One image, its segment-index map (0 = void) and each segment's category id."""
    layers = _sky_ground(rng, h, w, PANOPTIC_CATEGORY_IDS['sky'], PANOPTIC_CATEGORY_IDS['ground'])
    idmap = np.zeros((h * _SS, w * _SS), np.uint8)
    for k, layer in enumerate(layers, start=1):
        idmap[_raster(layer.polygon, h, w)] = k

    def draw(rng: np.random.Generator) -> tuple[str, int]:
        if rng.random() < clutter:  # unlabeled clutter: void in the panoptic map
            return 'blob', 0
        shape = PANOPTIC_THINGS[int(rng.integers(len(PANOPTIC_THINGS)))]
        return shape, PANOPTIC_CATEGORY_IDS[shape]
    # Any segment may have holes (a PNG holds them), so only slivers are avoided.
    idmap = _place_objects(rng, idmap, layers, int(rng.integers(1, max_objects + 1)), draw,
                           h, w, size_range, min_area, check_holes=False)
    img = _compose(np.zeros((h, w, 3), np.float32), idmap, layers, rng, noise_std=4.0)
    # Each pixel belongs to the layer covering most of it (the upper one on a tie): panoptic
    # segments tile the image; only clutter is void.
    cov = np.stack([_coverage(idmap, k) for k in range(len(layers) + 1)])
    owner = len(layers) - np.argmax(cov[::-1], axis=0)
    return img, owner, [0] + [layer.label for layer in layers]


def make_coco_panoptic_shapes(out_dir: str | Path, split: str = 'train', num_images: int = 200,
                              seed: int = 0, image_size: tuple[int, int] = (128, 128),
                              max_objects: int = 5,
                              size_range: tuple[float, float] = (0.08, 0.3),
                              min_area: float = 12.0, clutter: float = 0.2) -> Path:
    """Write a panoptic dataset in the COCO panoptic layout (Kirillov et al., "Panoptic
    Segmentation", CVPR 2019): ``out_dir/{split}/*.jpg``, ``out_dir/annotations/panoptic_{split}/
    *.png`` (segment ids RGB-encoded, ``id = R + 256 G + 256^2 B``, 0 = void) and
    ``out_dir/annotations/panoptic_{split}.json``.

    Things are the shapes of :data:`PANOPTIC_THINGS` (one segment per visible object), stuff the
    sky and ground of :func:`make_ade_shapes`' scenes (one segment per class and image); unlabeled
    clutter objects are void. Category ids are those of :data:`PANOPTIC_CATEGORY_IDS` (things
    first), a segment's id is ``category_id + 256 * k`` for its index ``k`` in the image, and
    ``area`` / ``bbox`` (``[x, y, w, h]``, integer pixel bounds) are measured on the PNG.

    Args:
        out_dir: dataset root (created).
        split: ``'train'`` or ``'val'``.
        num_images: number of images.
        seed: base seed; image ``i`` is drawn from ``SeedSequence((seed, split, i))``.
        image_size: ``(height, width)`` in pixels.
        max_objects: at most this many objects (things and clutter) in front of the stuff.
        size_range: object radius range as a fraction of the shorter image side.
        min_area: an object is never left visible over less than this many pixels.
        clutter: probability that an object is unlabeled clutter (void) instead of a thing.

    Returns:
        The path of the annotation json.
    """
    if split not in ('train', 'val'):
        raise ValueError(f"split must be 'train' or 'val', got '{split}'")
    if num_images < 1:
        raise ValueError(f'num_images must be >= 1, got {num_images}')
    if not 0.0 <= clutter <= 1.0:
        raise ValueError(f'clutter must be a probability in [0, 1], got {clutter}')
    h, w = image_size
    root = Path(out_dir)
    seg_dir = root / 'annotations' / f'panoptic_{split}'
    (root / split).mkdir(parents=True, exist_ok=True)
    seg_dir.mkdir(parents=True, exist_ok=True)
    isthing = {c: int(c in PANOPTIC_THINGS) for c in PANOPTIC_CLASSES}
    images, annotations = [], []
    for i in range(num_images):
        rng = np.random.default_rng(np.random.SeedSequence((seed, 4 + _SPLITS[split], i)))
        img, owner, labels = _panoptic_scene(rng, h, w, max_objects, size_range, min_area, clutter)
        pan = np.zeros((h, w), np.int64)
        segments = []
        for k in range(1, len(labels)):
            mask = owner == k
            if labels[k] == 0 or not mask.any():
                continue  # clutter (void) or hidden
            seg_id = labels[k] + 256 * (len(segments) + 1)
            pan[mask] = seg_id
            ys, xs = np.nonzero(mask)
            segments.append(dict(
                id=int(seg_id), category_id=labels[k], area=int(mask.sum()),
                bbox=[int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
                      int(ys.max() - ys.min() + 1)],
                iscrowd=0))
        image_id = i + 1
        name = f'{image_id:06d}'
        _write(root / split / f'{name}.jpg', img, '.jpg')
        _write(seg_dir / f'{name}.png', id2rgb(pan), '.png')
        images.append(dict(id=image_id, file_name=f'{name}.jpg', width=w, height=h))
        annotations.append(dict(image_id=image_id, file_name=f'{name}.png',
                                segments_info=segments))
    coco = dict(
        info=dict(description='densekit synthetic shapes (panoptic segmentation)',
                  version='1.0', seed=seed, split=split),
        licenses=[],
        images=images,
        annotations=annotations,
        categories=[dict(id=PANOPTIC_CATEGORY_IDS[c], name=c,
                         supercategory='shape' if isthing[c] else 'scene', isthing=isthing[c])
                    for c in PANOPTIC_CLASSES])
    ann_file = root / 'annotations' / f'panoptic_{split}.json'
    ann_file.write_text(json.dumps(coco, separators=(',', ':')))
    return ann_file


def _write(path: Path, array: np.ndarray, ext: str) -> None:
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext == '.jpg' else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, buf = cv2.imencode(ext, array, params)
    if not ok:
        raise OSError(f'could not encode {path}')
    path.write_bytes(buf.tobytes())


def make_demo_data(out_dir: str | Path, kind: str = 'all', num_train: int = 200,
                   num_val: int = 50, seed: int = 0) -> dict[str, Path]:
    """Generate the quickstart datasets under ``out_dir/coco`` and / or ``out_dir/ade``.

    Args:
        out_dir: root, e.g. ``data/quickstart``.
        kind: ``'coco'``, ``'ade'``, ``'all'`` (both) or ``'coco_panoptic'`` (the panoptic set
            under ``out_dir/coco_panoptic``; not part of ``'all'``, which the quickstart uses).
        num_train: training images per dataset.
        num_val: validation images per dataset.
        seed: base seed (see :func:`make_coco_shapes`).

    Returns:
        ``{'coco': root, 'ade': root}`` (or ``{'coco_panoptic': root}``) for the datasets written.
    """
    if kind not in ('coco', 'ade', 'all', 'coco_panoptic'):
        raise ValueError(f"kind must be 'coco', 'ade', 'all' or 'coco_panoptic', got '{kind}'")
    out = Path(out_dir)
    written = {}
    if kind in ('coco', 'all'):
        make_coco_shapes(out / 'coco', 'train', num_train, seed)
        make_coco_shapes(out / 'coco', 'val', num_val, seed)
        written['coco'] = out / 'coco'
    if kind in ('ade', 'all'):
        make_ade_shapes(out / 'ade', 'training', num_train, seed)
        make_ade_shapes(out / 'ade', 'validation', num_val, seed)
        written['ade'] = out / 'ade'
    if kind == 'coco_panoptic':
        make_coco_panoptic_shapes(out / 'coco_panoptic', 'train', num_train, seed)
        make_coco_panoptic_shapes(out / 'coco_panoptic', 'val', num_val, seed)
        written['coco_panoptic'] = out / 'coco_panoptic'
    return written
