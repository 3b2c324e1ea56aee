"""The COCO panoptic PNG id encoding (Kirillov et al., "Panoptic Segmentation", CVPR 2019).

A COCO panoptic PNG stores each pixel's segment id in its colour: ``id = R + 256 * G + 256**2 * B``
(0 is VOID, i.e. unlabelled). :func:`rgb2id` and :func:`id2rgb` convert between the two, with the
names and return types of ``panopticapi.utils`` that mmdet relies on.
"""
from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np


def rgb2id(color: np.ndarray | Sequence[int]) -> np.ndarray | int:
    """Segment ids of an ``[H, W, 3]`` RGB panoptic image, or the id of one ``(R, G, B)`` colour.

    Args:
        color: an ``[H, W, 3]`` array (channel order R, G, B) or a length-3 sequence.

    Returns:
        An ``[H, W]`` integer array (int32 for uint8 input, so that ``256**2 * B`` cannot
        overflow; other integer dtypes are kept) or a Python ``int`` for a single colour.
    """
    if isinstance(color, np.ndarray) and color.ndim == 3:
        if color.shape[-1] != 3:
            raise ValueError(f'rgb2id expects an [H, W, 3] image, got shape {color.shape}')
        # Small integer dtypes would wrap around under numpy 2's value-independent promotion.
        if np.issubdtype(color.dtype, np.integer) and color.dtype.itemsize < 4:
            color = color.astype(np.int32)
        return color[..., 0] + 256 * color[..., 1] + 65536 * color[..., 2]
    r, g, b = (int(c) for c in color[:3])
    return r + 256 * g + 65536 * b


def id2rgb(id_map: np.ndarray | int) -> np.ndarray | list:
    """The RGB encoding of segment ids (the inverse of :func:`rgb2id`).

    Args:
        id_map: an integer array of ids (any shape) or a single id.

    Returns:
        A ``uint8`` array of shape ``id_map.shape + (3,)``, or ``[R, G, B]`` for a single id.
    """
    if isinstance(id_map, np.ndarray):
        ids = id_map.astype(np.int64) if np.issubdtype(id_map.dtype, np.integer) else id_map
        rgb = np.empty(id_map.shape + (3,), dtype=np.uint8)
        for channel in range(3):  # R is the least significant byte
            rgb[..., channel] = (ids // 256 ** channel) % 256
        return rgb
    return [(id_map // 256 ** channel) % 256 for channel in range(3)]


def save_json(d: Any, file: str) -> None:
    """Writes ``d`` as JSON to ``file`` (kept for mmdet's dataset-converter tools)."""
    with open(file, 'w') as f:
        json.dump(d, f)
