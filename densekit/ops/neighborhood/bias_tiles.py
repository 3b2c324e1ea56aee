"""Precomputed bias + mask tiles for the neighborhood-attention Triton kernels (the default path;
``bias_tiles=False`` in the launch configuration selects the per-pair one).

On the per-pair path every (query, key) pair of a tile's key region pays for its window mask
(offsets, compares) and a gather from the ``[heads, 2k-1, 2k-1]`` bias table. Both depend only on
where a tile sits relative to the borders of its sub-grid, not on the image: along one axis, all
interior tiles look alike, and only the first and last tiles (and a partial one) differ. This
module finds those tile *types* per axis, and lays out, for every pair of types, head and key
chunk, the ``[BLOCK_M, BLOCK_N]`` tile of bias values with ``-inf`` where a pair may not attend,
in the order the kernel visits it. The kernel then replaces mask + gather by one contiguous tile
load and an add. Semantics are those of ``reference.py``; the kernel formulas for window starts,
key regions (forward / dQ) and query regions (dK / dV) are mirrored here exactly.

Layout: ``tiles[heads, type_pairs, chunks, rows, cols]`` in the bias dtype; rows are the
program's own tokens (queries for forward / dQ, keys for dK / dV) and cols the streamed ones;
``type_of_h[class * n_tiles_h + tile]`` (int32) gives the axis type, and a pair is
``type_h * n_types_w + type_w``.
"""
from __future__ import annotations

import functools
from typing import List, NamedTuple, Tuple

import torch


def _win_start(i: int, lc: int, k: int) -> int:
    return min(max(i - k // 2, 0), lc - k)


class AxisTypes(NamedTuple):
    type_of: Tuple[int, ...]  # per (class, tile): the type index
    length: Tuple[int, ...]  # per type: the streamed region's extent along this axis
    own_ok: Tuple[Tuple[bool, ...], ...]  # per type: which of the tile's own rows are valid
    start: Tuple[Tuple[Tuple[int, ...], ...], ...]  # per type and own row: the streamed indices it attends
    offset: Tuple[int, ...]  # per type: own-row-0 minus streamed-0 position (bias index offset)


def _signature(lc: int, t0: int, k: int, tile: int, transposed: bool):
    own = [t0 + i for i in range(tile)]
    ok = tuple(x < lc for x in own)
    if not transposed:  # key region of the query tile (kernel: kr0, kr1)
        s0 = _win_start(t0, lc, k)
        length = _win_start(min(t0 + tile - 1, lc - 1), lc, k) + k - s0
        allowed = tuple(tuple(u for u in range(length) if 0 <= s0 + u - _win_start(x, lc, k) < k) for x in own)
    else:  # query region of the key tile (kernel: q0h, q1h)
        k1 = min(t0 + tile - 1, lc - 1)
        s0 = 0 if t0 < k else t0 - k // 2
        length = (lc - 1 if k1 >= lc - k else k1 + k // 2) - s0 + 1
        allowed = tuple(tuple(u for u in range(length) if 0 <= x - _win_start(s0 + u, lc, k) < k) for x in own)
    return length, ok, allowed, t0 - s0


def _interior(lc: int, t0: int, k: int, tile: int, transposed: bool) -> bool:
    """Tiles away from the borders, whose (relative) pattern is one and the same: every own row
    valid with an unclamped window, and (dK / dV) an unclamped query region."""
    if not transposed:
        return t0 >= k // 2 and t0 + tile - 1 + k // 2 <= lc - 1
    return t0 >= k and t0 + tile - 1 < lc - k


@functools.lru_cache(maxsize=128)
def axis_types(L: int, k: int, d: int, tile: int, transposed: bool, exhaustive: bool = False) -> Tuple[AxisTypes, int]:
    """Distinct 1-D tile patterns of one axis; returns them and the tiles per class.

    ``transposed=False``: a tile of queries and its key region (forward, dQ). ``True``: a tile of
    keys and the region of queries whose windows can contain them (dK / dV). For each type,
    ``start[t][r]`` is the tuple of the streamed indices that own row ``r`` may pair with.
    Interior tiles share the first interior tile's type without being enumerated (``exhaustive``
    enumerates every tile: the test of that shortcut).
    """
    n_tiles = -(-(-(-L // d)) // tile)  # cdiv(cdiv(L, d), tile), as the launch grid
    sigs: dict = {}
    type_of: List[int] = []
    interior_type = None
    for r in range(d):
        lc = (L - r + d - 1) // d
        for t in range(n_tiles):
            inner = not exhaustive and _interior(lc, t * tile, k, tile, transposed)
            if inner and interior_type is not None:
                type_of.append(interior_type)
                continue
            sig = _signature(lc, t * tile, k, tile, transposed)
            type_of.append(sigs.setdefault(sig, len(sigs)))
            if inner:
                interior_type = type_of[-1]
    types = sorted(sigs, key=sigs.get)
    return AxisTypes(tuple(type_of), tuple(s[0] for s in types), tuple(s[1] for s in types),
                     tuple(s[2] for s in types), tuple(s[3] for s in types)), n_tiles


def _axis_tensors(types: AxisTypes, tile: int):
    """Per type: ``[tile, length]`` allowed matrix padded to the longest region, own-row validity,
    and the bias offsets."""
    L = max(types.length)
    allowed = torch.zeros(len(types.length), tile, L, dtype=torch.bool)
    for t, rows in enumerate(types.start):
        for r, cols in enumerate(rows):
            allowed[t, r, list(cols)] = True
    own_ok = torch.tensor(types.own_ok, dtype=torch.bool)  # [types, tile]
    return allowed, own_ok


@functools.lru_cache(maxsize=32)  # an entry is ~1-2 MiB on the device (index + mask)
def _index(ah: AxisTypes, aw: AxisTypes, kernel: Tuple[int, int], tile: Tuple[int, int], block: int,
           transposed: bool, device: str):
    """Flat bias index ``[pairs, chunks, rows, cols]`` (int64, 0 where masked) and the mask
    (``True`` where a pair may not attend) of two axes' types. Keyed on the types alone (``type_of`` emptied), so maps of different sizes whose tiles
    fall into the same types (most sizes, once past a few tiles) share one entry."""
    kh, kw = kernel
    th_, tw_ = tile
    nh_t, nw_t = len(ah.length), len(aw.length)
    streamed = max(lh * lw for lh in ah.length for lw in aw.length)
    chunks = -(-streamed // block)
    allow_h, ok_h = _axis_tensors(ah, th_)
    allow_w, ok_w = _axis_tensors(aw, tw_)
    r = torch.arange(th_ * tw_)
    i, j = r // tw_, r % tw_  # own row -> (row, col) in the tile
    n = torch.arange(chunks * block)
    idx = torch.full((nh_t * nw_t, th_ * tw_, chunks * block), -1, dtype=torch.long)
    for a in range(nh_t):
        for b in range(nw_t):
            lh, lw = ah.length[a], aw.length[b]
            su, sv = (n // lw).clamp(max=lh - 1), n % lw  # streamed (row, col) in the region
            ok = (n < lh * lw)[None, :] & (ok_h[a, i] & ok_w[b, j])[:, None]
            ok &= allow_h[a][i[:, None], su[None, :]] & allow_w[b][j[:, None], sv[None, :]]
            # bias index per axis: (key - query) + k - 1; own row i sits at offset + i
            if not transposed:  # own = query, streamed = key
                dy = su[None, :] - (ah.offset[a] + i)[:, None] + kh - 1
                dx = sv[None, :] - (aw.offset[b] + j)[:, None] + kw - 1
            else:  # own = key, streamed = query
                dy = (ah.offset[a] + i)[:, None] - su[None, :] + kh - 1
                dx = (aw.offset[b] + j)[:, None] - sv[None, :] + kw - 1
            idx[a * nw_t + b] = torch.where(ok, dy * (2 * kw - 1) + dx, -1)
    idx = idx.view(nh_t * nw_t, th_ * tw_, chunks, block).transpose(1, 2).to(device).contiguous()
    masked = idx < 0
    return idx.clamp_(min=0), masked, chunks  # [pairs, chunks, rows, cols]


@functools.lru_cache(maxsize=256)
def _tables(H: int, W: int, kernel: Tuple[int, int], dilation: Tuple[int, int], tile: Tuple[int, int],
            block: int, transposed: bool, device: str):
    ah, _ = axis_types(H, kernel[0], dilation[0], tile[0], transposed)
    aw, _ = axis_types(W, kernel[1], dilation[1], tile[1], transposed)
    idx, masked, chunks = _index(ah._replace(type_of=()), aw._replace(type_of=()), kernel, tile, block, transposed,
                                 device)
    type_h = torch.tensor(ah.type_of, dtype=torch.int32, device=device)
    type_w = torch.tensor(aw.type_of, dtype=torch.int32, device=device)
    return idx, masked, type_h, type_w, len(aw.length), chunks


def tile_bytes(heads: int, H: int, W: int, kernel, dilation, tile, block: int, transposed: bool,
               element_size: int) -> int:
    """Size of the tiles ``bias_tiles`` would build (for the caller's memory guard)."""
    ah, _ = axis_types(H, kernel[0], dilation[0], tile[0], transposed)
    aw, _ = axis_types(W, kernel[1], dilation[1], tile[1], transposed)
    streamed = max(lh * lw for lh in ah.length for lw in aw.length)
    chunks = -(-streamed // block)
    return heads * len(ah.length) * len(aw.length) * chunks * block * tile[0] * tile[1] * element_size


def bias_tiles(rpb, heads: int, H: int, W: int, kernel: Tuple[int, int], dilation: Tuple[int, int],
               tile: Tuple[int, int], block: int, transposed: bool, dtype: torch.dtype, device):
    """``(tiles, type_h, type_w, n_types_w, chunks)`` for one kernel's launch configuration.

    ``tiles``: ``[heads, pairs, chunks, rows, cols]`` in ``dtype``: the bias (``rpb``, or 0 without
    one) where the pair attends, ``-inf`` elsewhere."""
    idx, masked, type_h, type_w, nw_t, chunks = _tables(H, W, tuple(kernel), tuple(dilation), tuple(tile),
                                                        block, transposed, str(device))
    if rpb is None:
        vals = torch.zeros((heads,) + idx.shape, dtype=dtype, device=device)
    else:
        vals = rpb.reshape(heads, -1).to(dtype)[:, idx]
    return vals.masked_fill_(masked, float('-inf')), type_h, type_w, nw_t, chunks  # vals is a fresh tensor
