"""Tiny generated datasets in the on-disk layouts the detection / segmentation configs expect.

Everything is synthetic (random images with rectangles of known classes), small (<= 96x128) and
written under a temporary folder, so the config tests never depend on real data.

Layouts (relative to the returned root):

* ``coco/``: ``train2017/``, ``val2017/``, ``annotations/instances_{train,val}2017.json`` (the 80
  COCO thing classes, polygons) and ``annotations/panoptic_{train,val}2017.json`` +
  ``annotations/panoptic_{train,val}2017/*.png`` (80 things + 53 stuff, RGB-encoded ids).
* ``ade/ADEChallengeData2016/``: ``images/{training,validation}/*.jpg`` and
  ``annotations/{training,validation}/*.png`` (uint8, 0 = other, 1..150 classes).
* ``cityscapes/``: ``leftImg8bit/{train,val}/demo/*_leftImg8bit.png`` and
  ``gtFine/{train,val}/demo/*_gtFine_labelTrainIds.png`` (0..18, 255 = ignore).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def _rects(rng: np.random.Generator, h: int, w: int, n: int) -> list[tuple[int, int, int, int]]:
    """``n`` random boxes (x0, y0, x1, y1), each at least 12 px wide and high."""
    out = []
    for _ in range(n):
        x0 = int(rng.integers(0, w - 24))
        y0 = int(rng.integers(0, h - 24))
        x1 = int(rng.integers(x0 + 12, min(w, x0 + 64) + 1))
        y1 = int(rng.integers(y0 + 12, min(h, y0 + 64) + 1))
        out.append((x0, y0, x1, y1))
    return out


def _image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def make_coco(root: Path, num_images: int = 2, h: int = 96, w: int = 128, seed: int = 0) -> Path:
    """COCO instance + panoptic annotations for the same random images."""
    from mmdet.datasets import CocoDataset, CocoPanopticDataset

    rng = np.random.default_rng(seed)
    things = list(CocoDataset.METAINFO['classes'])
    pan_meta = CocoPanopticDataset.METAINFO
    stuff = list(pan_meta['stuff_classes'])
    inst_cats = [dict(id=i + 1, name=n, supercategory='thing') for i, n in enumerate(things)]
    pan_cats = inst_cats + [dict(id=len(things) + i + 1, name=n, supercategory='stuff')
                            for i, n in enumerate(stuff)]
    for c in pan_cats:
        c['isthing'] = int(c['supercategory'] == 'thing')
    coco = root / 'coco'
    for split in ('train2017', 'val2017'):
        (coco / split).mkdir(parents=True, exist_ok=True)
        pan_dir = coco / 'annotations' / f'panoptic_{split}'
        pan_dir.mkdir(parents=True, exist_ok=True)
        images, inst_anns, pan_anns = [], [], []
        ann_id = 1
        for k in range(num_images):
            img_id = k + 1
            name = f'{img_id:012d}'
            Image.fromarray(_image(rng, h, w)).save(coco / split / f'{name}.jpg')
            images.append(dict(id=img_id, file_name=f'{name}.jpg', height=h, width=w))
            pan = np.zeros((h, w), dtype=np.int64)
            # One stuff segment covering the top half, then things drawn over it.
            stuff_cat = len(things) + 1 + int(rng.integers(0, len(stuff)))
            segments = [dict(id=1, category_id=stuff_cat, iscrowd=0)]
            pan[: h // 2] = 1
            for j, (x0, y0, x1, y1) in enumerate(_rects(rng, h, w, 3)):
                cat = int(rng.integers(1, len(things) + 1))
                seg_id = j + 2
                pan[y0:y1, x0:x1] = seg_id
                segments.append(dict(id=seg_id, category_id=cat, iscrowd=0))
                poly = [x0, y0, x1, y0, x1, y1, x0, y1]
                inst_anns.append(dict(id=ann_id, image_id=img_id, category_id=cat,
                                      segmentation=[[float(v) for v in poly]],
                                      bbox=[x0, y0, x1 - x0, y1 - y0],
                                      area=float((x1 - x0) * (y1 - y0)), iscrowd=0))
                ann_id += 1
            kept = []
            for s in segments:
                ys, xs = np.nonzero(pan == s['id'])
                if ys.size == 0:  # fully covered by later things
                    continue
                s['bbox'] = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
                             int(ys.max() - ys.min() + 1)]
                s['area'] = int(ys.size)
                kept.append(s)
            rgb = np.stack([pan % 256, (pan // 256) % 256, pan // 65536], axis=-1).astype(np.uint8)
            Image.fromarray(rgb).save(pan_dir / f'{name}.png')
            pan_anns.append(dict(image_id=img_id, file_name=f'{name}.png', segments_info=kept))
        (coco / 'annotations').mkdir(exist_ok=True)
        (coco / 'annotations' / f'instances_{split}.json').write_text(json.dumps(
            dict(images=images, annotations=inst_anns, categories=inst_cats)))
        (coco / 'annotations' / f'panoptic_{split}.json').write_text(json.dumps(
            dict(images=images, annotations=pan_anns, categories=pan_cats)))
    return coco


def make_ade(root: Path, num_images: int = 2, h: int = 96, w: int = 128, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    ade = root / 'ade' / 'ADEChallengeData2016'
    for split in ('training', 'validation'):
        (ade / 'images' / split).mkdir(parents=True, exist_ok=True)
        (ade / 'annotations' / split).mkdir(parents=True, exist_ok=True)
        for k in range(num_images):
            name = f'ADE_{split[:5]}_{k:08d}'
            Image.fromarray(_image(rng, h, w)).save(ade / 'images' / split / f'{name}.jpg')
            label = np.zeros((h, w), dtype=np.uint8)
            for x0, y0, x1, y1 in _rects(rng, h, w, 4):
                label[y0:y1, x0:x1] = int(rng.integers(1, 151))
            Image.fromarray(label).save(ade / 'annotations' / split / f'{name}.png')
    return ade


def make_cityscapes(root: Path, num_images: int = 2, h: int = 64, w: int = 128,
                    seed: int = 2) -> Path:
    rng = np.random.default_rng(seed)
    city = root / 'cityscapes'
    for split in ('train', 'val'):
        img_dir = city / 'leftImg8bit' / split / 'demo'
        gt_dir = city / 'gtFine' / split / 'demo'
        img_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        for k in range(num_images):
            stem = f'demo_{k:06d}_000019'
            Image.fromarray(_image(rng, h, w)).save(img_dir / f'{stem}_leftImg8bit.png')
            label = np.full((h, w), 255, dtype=np.uint8)
            label[h // 2:] = 0  # road
            for x0, y0, x1, y1 in _rects(rng, h, w, 3):
                label[y0:y1, x0:x1] = int(rng.integers(0, 19))
            Image.fromarray(label).save(gt_dir / f'{stem}_gtFine_labelTrainIds.png')
    return city
