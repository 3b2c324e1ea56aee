"""A deterministic synthetic indoor depth set, ray-cast per pixel by densekit's own code.

Each scene is a box-shaped room (floor, ceiling, back and side walls) holding a few axis-aligned
boxes standing on the floor and a few spheres, seen by a pinhole camera with a small random pitch
and yaw. Every pixel's ray is intersected analytically with all primitives; the nearest hit gives
the ground-truth depth (z-depth along the optical axis, as stored by NYUv2 and KITTI) and the
surface normal, which shades a procedural texture (checkerboards, stripes, flat colours) with a
Lambertian light plus an ambient term. A small rectangle of each back wall is marked as missing
depth (0), like the holes of real sensors, so the invalid-pixel masking is exercised.

The layout on disk mirrors a generic image / depth-png folder dataset::

    root/images/{train,val}/scene_00000.png   RGB, uint8
    root/depth/{train,val}/scene_00000.png    depth in millimetres, uint16 (scale 1000), 0 = invalid

Scene ``i`` of a split depends only on ``(seed, split, i)``, so regenerating is bit-identical.
No OpenMMLab dependency; numpy and OpenCV only.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEPTH_SCALE = 1000.0  # png value per metre (NYUv2 convention)
MAX_DEPTH = 10.0
_SPLIT_OFFSET = {'train': 0, 'val': 1_000_003}


@dataclass
class _Hit:
    t: np.ndarray       # [P] ray parameter of the nearest hit (inf: none)
    normal: np.ndarray  # [P, 3]
    albedo: np.ndarray  # [P, 3]


def _update(hit: _Hit, t: np.ndarray, normal: np.ndarray, albedo: np.ndarray) -> None:
    closer = (t > 1e-4) & (t < hit.t)
    hit.t[closer] = t[closer]
    hit.normal[closer] = normal[closer] if normal.ndim == 2 else normal
    hit.albedo[closer] = albedo[closer] if albedo.ndim == 2 else albedo


def _checker(u: np.ndarray, v: np.ndarray, size: float, c0, c1) -> np.ndarray:
    parity = (np.floor(u / size) + np.floor(v / size)) % 2
    return np.where(parity[:, None] > 0, np.asarray(c1, float), np.asarray(c0, float))


def _rotation(pitch: float, yaw: float) -> np.ndarray:
    cp, sp, cy, sy = np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return ry @ rx


def render_scene(rng: np.random.Generator, height: int = 96, width: int = 128
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Render one random room.

    Args:
        rng: the random generator that fixes the scene.
        height: image height in pixels.
        width: image width in pixels.

    Returns:
        ``(image, depth)``: ``image`` uint8 ``[height, width, 3]`` in RGB order, ``depth`` float32
        ``[height, width]`` in metres (z-depth, ``<= MAX_DEPTH``; 0 marks missing depth).
    """
    # Camera coordinates: x right, y down, z forward; the camera sits at the origin.
    focal = 0.8 * width  # ~64 degree horizontal field of view
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    d_cam = np.stack([(u + 0.5 - width / 2) / focal, (v + 0.5 - height / 2) / focal,
                      np.ones_like(u)], -1).reshape(-1, 3)
    rot = _rotation(rng.uniform(-0.12, 0.12), rng.uniform(-0.15, 0.15))
    d = d_cam @ rot.T  # world directions; t along d equals the camera z-depth (d_cam.z == 1)
    n_px = d.shape[0]
    hit = _Hit(np.full(n_px, np.inf), np.zeros((n_px, 3)), np.zeros((n_px, 3)))

    cam_h = rng.uniform(1.2, 1.7)                 # floor at y = +cam_h
    ceil = cam_h - rng.uniform(2.6, 3.2)          # ceiling plane y = ceil (< 0)
    back = rng.uniform(5.5, 8.5)                  # back wall z = back
    left, right = -rng.uniform(1.6, 3.0), rng.uniform(1.6, 3.0)
    palette = rng.uniform(0.25, 0.95, size=(8, 3))

    with np.errstate(divide='ignore', invalid='ignore'):
        # Axis-aligned planes: (axis, offset, normal facing the camera, texture axes, colours).
        planes = [
            (1, cam_h, (0, -1, 0), (0, 2), 0.5, palette[0], palette[0] * 0.45),  # floor tiles
            (1, ceil, (0, 1, 0), (0, 2), 1.5, palette[1], palette[1] * 0.9),     # ceiling
            (2, back, (0, 0, -1), (0, 1), 0.7, palette[2], palette[2] * 0.6),    # back wall
            (0, left, (1, 0, 0), (2, 1), 0.9, palette[3], palette[3] * 0.7),     # left wall
            (0, right, (-1, 0, 0), (2, 1), 0.9, palette[4], palette[4] * 0.7),   # right wall
        ]
        for axis, offset, normal, (ta, tb), size, c0, c1 in planes:
            t = offset / d[:, axis]
            p = d * t[:, None]
            albedo = _checker(p[:, ta], p[:, tb], size, c0, c1)
            _update(hit, t, np.asarray(normal, float), albedo)

        # Boxes standing on the floor.
        for _ in range(int(rng.integers(2, 5))):
            sx, sy, sz = rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.4), rng.uniform(0.3, 1.0)
            cx = rng.uniform(left + sx / 2, right - sx / 2)
            cz = rng.uniform(2.0, back - sz / 2 - 0.2)
            lo = np.array([cx - sx / 2, cam_h - sy, cz - sz / 2])
            hi = np.array([cx + sx / 2, cam_h, cz + sz / 2])
            t0, t1 = lo / d, hi / d
            tmin, tmax = np.minimum(t0, t1), np.maximum(t0, t1)
            t_near, t_far = tmin.max(1), tmax.min(1)
            t = np.where((t_near <= t_far) & (t_near > 0), t_near, np.inf)
            face = tmin.argmax(1)  # the slab entered last is the face that was hit
            normal = np.zeros((n_px, 3))
            normal[np.arange(n_px), face] = -np.sign(d[np.arange(n_px), face])
            col = palette[5 + int(rng.integers(0, 3))]
            p = d * np.where(np.isfinite(t), t, 0)[:, None]
            stripes = (np.floor((p[:, 0] + p[:, 1] + p[:, 2]) / 0.15) % 2)[:, None]
            _update(hit, t, normal, col * (0.75 + 0.25 * stripes))

        # Spheres, on the floor or floating.
        for _ in range(int(rng.integers(1, 4))):
            r = rng.uniform(0.2, 0.6)
            c = np.array([rng.uniform(left + r, right - r), cam_h - r - rng.uniform(0, 1.0),
                          rng.uniform(1.5 + r, back - r - 0.2)])
            b = d @ c
            dd = (d * d).sum(1)
            disc = b * b - dd * (c @ c - r * r)
            t = np.where(disc >= 0, (b - np.sqrt(np.maximum(disc, 0))) / dd, np.inf)
            p = d * np.where(np.isfinite(t), t, 0)[:, None]
            normal = (p - c) / r
            col = rng.uniform(0.2, 1.0, size=3)
            _update(hit, t, normal, np.broadcast_to(col, (n_px, 3)) * (0.8 + 0.2 * normal[:, 1:2]))

    depth = hit.t.reshape(height, width).astype(np.float32)
    depth = np.minimum(depth, MAX_DEPTH)
    light = np.array([0.3, -0.8, -0.5])
    light /= np.linalg.norm(light)
    lambert = np.clip(hit.normal @ light, 0, None)[:, None]
    # Mild distance attenuation: a monocular cue the network can learn, like real indoor lighting.
    fall = 1.0 / (1.0 + 0.04 * hit.t[:, None] ** 2)
    rgb = hit.albedo * (0.35 + 0.65 * lambert) * (0.5 + 0.5 * fall)
    rgb = rgb.reshape(height, width, 3) + rng.normal(0, 0.01, size=(height, width, 3))
    image = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)

    # A sensor hole: a small patch without depth (a "window" on the back wall region).
    hh, hw = max(1, height // 10), max(1, width // 10)
    y0, x0 = int(rng.integers(0, height - hh)), int(rng.integers(0, width - hw))
    depth[y0:y0 + hh, x0:x0 + hw] = 0.0
    return image, depth


def make_synthetic_depth(root: str | os.PathLike, num_train: int = 64, num_val: int = 16,
                         height: int = 96, width: int = 128, seed: int = 0) -> Path:
    """Write the synthetic set under ``root`` (layout in the module docstring).

    Args:
        root: output folder (created).
        num_train: number of training scenes.
        num_val: number of validation scenes.
        height: image height.
        width: image width.
        seed: base seed; scene ``i`` of a split uses ``(seed, split offset + i)``.

    Returns:
        ``Path(root)``.
    """
    import cv2

    if height < 16 or width < 16:
        raise ValueError(f"make_synthetic_depth: height={height}, width={width} must be >= 16")
    root = Path(root)
    for split, num in (('train', num_train), ('val', num_val)):
        img_dir, dep_dir = root / 'images' / split, root / 'depth' / split
        img_dir.mkdir(parents=True, exist_ok=True)
        dep_dir.mkdir(parents=True, exist_ok=True)
        for i in range(num):
            rng = np.random.default_rng([seed, _SPLIT_OFFSET[split] + i])
            image, depth = render_scene(rng, height, width)
            name = f'scene_{i:05d}.png'
            cv2.imwrite(str(img_dir / name), image[:, :, ::-1])  # OpenCV writes BGR
            cv2.imwrite(str(dep_dir / name), np.round(depth * DEPTH_SCALE).astype(np.uint16))
    return root
