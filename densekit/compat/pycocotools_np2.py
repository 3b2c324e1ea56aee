"""numpy 2 fix for ``pycocotools.mask.decode`` (the COCO mask path of every mmdet data pipeline).

pycocotools (2.0.11 and earlier) builds the decoded masks with ``np.array(Masks)``, whose
``__array__`` takes neither ``dtype`` nor ``copy``. numpy 2 then retries without them and emits a
``DeprecationWarning`` on every decoded polygon (mmdet's ``LoadAnnotations(poly2mask=True)``,
``BitmapMasks``, the panoptic / instance metrics); a later numpy turns it into a ``TypeError``.

:func:`rle_decode` decodes COCO run-length encodings in numpy (the format of Lin et al.,
"Microsoft COCO: Common Objects in Context", ECCV 2014: column-major runs alternating 0 / 1,
optionally compressed as the LEB128-like character string of ``maskApi.c``), and
:func:`install` routes ``pycocotools.mask.decode`` through it. Encoding, merging, IoU and area
stay in pycocotools' C code, which has no numpy 2 problem.
"""
from __future__ import annotations

import numpy as np

_INSTALLED = False


def _counts_from_string(s: bytes) -> np.ndarray:
    """Counts of a compressed COCO RLE string (the inverse of ``rleToString``)."""
    c = np.frombuffer(s, dtype=np.uint8).astype(np.int64) - 48
    if c.size == 0:
        return np.zeros(0, np.int64)
    more = (c & 0x20) != 0                 # continuation bit: another 5-bit chunk follows
    ends = np.flatnonzero(~more)           # last chunk of each number
    starts = np.concatenate([[0], ends[:-1] + 1])
    group = np.repeat(np.arange(ends.size), ends - starts + 1)
    shift = 5 * (np.arange(c.size) - starts[group])
    x = np.zeros(ends.size, np.int64)
    np.add.at(x, group, (c & 0x1f) << shift)
    # The sign bit (0x10) of a number's last chunk sign-extends it.
    negative = (c[ends] & 0x10) != 0
    x[negative] -= np.int64(1) << (5 * (ends - starts + 1))[negative]
    # Counts from the third on are stored as differences to the count two places before.
    counts = x.copy()
    if counts.size > 3:
        counts[3::2] = np.cumsum(x[1::2])[1:]
    if counts.size > 2:
        counts[2::2] = np.cumsum(x[2::2])
    return counts


def rle_decode(rle: dict) -> np.ndarray:
    """Decode one COCO RLE dict (``size=[h, w]``, ``counts`` str / bytes / list) to uint8 HxW."""
    h, w = (int(v) for v in rle['size'])
    counts = rle['counts']
    if isinstance(counts, str):
        counts = counts.encode('ascii')
    counts = _counts_from_string(counts) if isinstance(counts, bytes) else np.asarray(counts,
                                                                                      np.int64)
    if counts.sum() != h * w or (counts < 0).any():
        raise ValueError(f'invalid COCO RLE: counts sum to {int(counts.sum())} for size {[h, w]}')
    values = np.arange(counts.size, dtype=np.uint8) & 1
    return np.repeat(values, counts).reshape(w, h).T


def decode(rles):
    """Drop-in ``pycocotools.mask.decode``: one RLE -> HxW, a list of RLEs -> HxWxN (uint8)."""
    if isinstance(rles, dict):
        return np.ascontiguousarray(rle_decode(rles))
    masks = [rle_decode(r) for r in rles]
    if not masks:
        raise ValueError('pycocotools.mask.decode: empty list of RLEs')
    # pycocotools returns Fortran-ordered HxWxN; consumers index [:, :, i].
    return np.asfortranarray(np.stack(masks, axis=2))


def install() -> None:
    """Route ``pycocotools.mask.decode`` through :func:`decode` (idempotent; no-op without it)."""
    global _INSTALLED
    if _INSTALLED:
        return
    try:
        import pycocotools.mask as mask_utils
    except ImportError:  # pragma: no cover - pycocotools is a dependency, but optional here
        return
    mask_utils._decode_c = mask_utils.decode
    mask_utils.decode = decode
    _INSTALLED = True
