"""A generated COCO instances file of any size (COCO train2017's by default: 118,287 images,
860,001 instances with polygon masks), for the scale benchmark (``benchmarks/annotation_scale.py``)
and its reduced correctness test.

Every instance is valid (a polygon inside its image, its box and area derived from it); about 1%
are ``iscrowd``, as in COCO. Seeded: the same arguments give the same file.

    python tools/dev/coco_scale.py OUT.json [--images N] [--instances M]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

COCO_TRAIN2017_IMAGES = 118_287
COCO_TRAIN2017_INSTANCES = 860_001
N_CATEGORIES = 80


def coco_instances(n_images: int = COCO_TRAIN2017_IMAGES,
                   n_instances: int = COCO_TRAIN2017_INSTANCES, seed: int = 0) -> dict:
    """The COCO dict: ``n_images`` images of 320-640 px, ``n_instances`` polygons (6-30 vertices,
    COCO's typical range) spread over them at random, 80 categories."""
    rng = np.random.default_rng(seed)
    widths = rng.integers(320, 641, n_images)
    heights = rng.integers(320, 641, n_images)
    images = [dict(id=i + 1, file_name=f'{i + 1:012d}.jpg', width=int(w), height=int(h))
              for i, (w, h) in enumerate(zip(widths.tolist(), heights.tolist()))]
    categories = [dict(id=c + 1, name=f'class_{c + 1:02d}', supercategory='thing')
                  for c in range(N_CATEGORIES)]
    owner = np.sort(rng.integers(0, n_images, n_instances))
    cats = rng.integers(1, N_CATEGORIES + 1, n_instances)
    crowd = rng.random(n_instances) < 0.01
    n_vertices = rng.integers(6, 31, n_instances)
    # polygon: vertices on a jittered ellipse inside the image
    w, h = widths[owner], heights[owner]
    rx = np.minimum(rng.uniform(0.01, 0.25, n_instances) * w + 2, w / 2 - 1)
    ry = np.minimum(rng.uniform(0.01, 0.25, n_instances) * h + 2, h / 2 - 1)
    cx = rng.uniform(rx, w - rx)
    cy = rng.uniform(ry, h - ry)
    total = int(n_vertices.sum())
    # increasing angles within each instance: a simple (non self-intersecting) polygon
    angle = (np.arange(total) - np.repeat(np.cumsum(n_vertices) - n_vertices, n_vertices)) \
        / np.repeat(n_vertices, n_vertices) * 2 * np.pi + rng.uniform(0, 0.2, total)
    jitter = rng.uniform(0.7, 1.0, total)
    starts = np.concatenate([[0], np.cumsum(n_vertices)[:-1]])
    idx = np.repeat(np.arange(n_instances), n_vertices)
    px = np.round(cx[idx] + rx[idx] * jitter * np.cos(angle), 2)
    py = np.round(cy[idx] + ry[idx] * jitter * np.sin(angle), 2)
    annotations = []
    for a in range(n_instances):
        s, n = int(starts[a]), int(n_vertices[a])
        xs, ys = px[s:s + n], py[s:s + n]
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max(), ys.max()
        # shoelace area of the polygon
        area = 0.5 * abs(float(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))))
        poly = np.empty(2 * n)
        poly[0::2], poly[1::2] = xs, ys
        annotations.append(dict(
            id=a + 1, image_id=int(owner[a]) + 1, category_id=int(cats[a]),
            segmentation=[poly.tolist()], area=round(area, 2),
            bbox=[round(float(x0), 2), round(float(y0), 2), round(float(x1 - x0), 2),
                  round(float(y1 - y0), 2)],
            iscrowd=int(crowd[a])))
    return dict(info=dict(description='densekit generated COCO-size instances'), licenses=[],
                images=images, annotations=annotations, categories=categories)


def write(path: str | Path, n_images: int = COCO_TRAIN2017_IMAGES,
          n_instances: int = COCO_TRAIN2017_INSTANCES, seed: int = 0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'w') as f:
        json.dump(coco_instances(n_images, n_instances, seed), f, separators=(',', ':'))
    return path


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('out')
    p.add_argument('--images', type=int, default=COCO_TRAIN2017_IMAGES)
    p.add_argument('--instances', type=int, default=COCO_TRAIN2017_INSTANCES)
    p.add_argument('--seed', type=int, default=0)
    a = p.parse_args()
    print(write(a.out, a.images, a.instances, a.seed))
