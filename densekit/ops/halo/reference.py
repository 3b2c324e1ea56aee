"""Pure-PyTorch reference blocked-halo attention (HaloNet) — the spec and the CPU path.

HaloNet: Vaswani et al., "Scaling Local Self-Attention for Parameter Efficient Visual Backbones",
CVPR 2021, arXiv:2103.12731.

Layouts: q, k, v, out ``[B, H, W, heads, head_dim]`` with ``H % b == W % b == 0`` (b = block
size; with ``query_stride = s``, q and out ``[B, H/s, W/s, heads, head_dim]``; v and out may
have their own head dim, timm's ``dim_head_v``); optional relative embeddings ``rel_h``, ``rel_w``: ``[2*win-1, head_dim]`` shared by all
heads, ``win = b + 2*halo`` (timm's ``PosEmbedRel.height_rel`` / ``width_rel``).

Semantics: the map is cut into ``b x b`` query blocks; block ``(I, J)`` attends to the
``win x win`` key window whose top-left corner is ``(I*b - halo, J*b - halo)``. Logits are
``scale * q.k + q.rel_h[uy - ty + win - 1] + q.rel_w[ux - tx + win - 1]``, with ``(ty, tx)`` the
query's position in its block and ``(uy, ux)`` the key's in the window, i.e.
``rel_h[ky - qy + halo + win - 1]`` in absolute coordinates (timm's ``rel_logits_1d``), or
``scale * (q.k + rel)`` when ``scale_pos_embed``.

Strided queries (``query_stride = s``, timm ``HaloAttn(stride=s)``): q is ``[B, H/s, W/s, heads,
D]`` and a block holds ``b/s x b/s`` queries, which attend to the same full-resolution window of
their block; ``(ty, tx)`` is then the position in the subsampled block (``0 .. b/s - 1``), exactly
timm's relative indexing. Window positions outside the map are handled by ``padding``:

* ``'zeros'`` — timm ``HaloAttn`` numerics: the keys / values there are zero vectors (timm pads
  *after* the kv projection), so they still take part in the softmax with logit ``rel`` only;
* ``'mask'`` — they are excluded from the softmax (what a masked kernel would do).

Implementation (CPU-minded, exact): the key / value windows are two ``index_select`` gathers of
the zero-padded map (their gradient is two ``index_add``, where ``unfold``'s is a slow generic
fold); the relative logits are one small matmul per axis, ``q . rel`` over all ``2*win-1``
offsets, read back per key through a strided view (offset ``ky - qy`` is a constant stride step,
no gather) and added to the ``q . k`` logits in timm's order of operations.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn.functional as F


def halo_rel_logits(q: torch.Tensor, rel: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Per-query relative-logit table ``q . rel``: ``[B, H, W, heads, 2*win-1]`` (or None)."""
    if rel is None:
        return None
    return torch.einsum('bhwnd,rd->bhwnr', q, rel.to(q.dtype))


@functools.lru_cache(maxsize=64)
def _window_rows_cpu(n_blocks: int, block: int, halo: int) -> torch.Tensor:
    """Rows of the halo-padded axis read by each block's window: ``[n_blocks * win]``."""
    with torch.inference_mode(False):  # a cached inference tensor could not be saved for backward
        win = block + 2 * halo
        return (torch.arange(n_blocks)[:, None] * block + torch.arange(win)[None, :]).reshape(-1)


def _rel_to_abs(tab: torch.Tensor, block: int, win: int, axis: int) -> torch.Tensor:
    """``tab [..., n(qy), n(qx), 2*win-1]`` (contiguous; n = ``block``, the queries per block side)
    -> ``[..., n, n, win]`` holding ``tab[..., qy, qx, k - q + win - 1]`` for key ``k`` and query
    coordinate ``q`` = qy (axis 0) or qx (axis 1): a strided view, since that offset moves by one
    entry per step of ``q``."""
    R = 2 * win - 1
    lead = tab.shape[:-3]
    lead_strides = tab.stride()[:-3]
    strides = (block * R - 1, R, 1) if axis == 0 else (block * R, R - 1, 1)
    return tab.as_strided((*lead, block, block, win), (*lead_strides, *strides), tab.storage_offset() + win - 1)


def halo_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block: int, halo: int,
                   rel_h: Optional[torch.Tensor], rel_w: Optional[torch.Tensor], scale: float,
                   scale_pos_embed: bool, padding: str, query_stride: int = 1) -> torch.Tensor:
    """Reference halo attention on validated inputs (see module docstring)."""
    B, H, W, h, D = k.shape
    win = block + 2 * halo
    nbh, nbw = H // block, W // block
    bq = block // query_stride  # queries per block side
    dtype = q.dtype
    ct = torch.float64 if dtype == torch.float64 else torch.float32
    q, k, v = q.to(ct), k.to(ct), v.to(ct)
    rows = _window_rows_cpu(nbh, block, halo).to(q.device)
    cols = _window_rows_cpu(nbw, block, halo).to(q.device)

    # queries: [B, nbh, nbw, h, bq*bq, D]
    qb = q.view(B, nbh, bq, nbw, bq, h, D).permute(0, 1, 3, 5, 2, 4, 6).reshape(B, nbh, nbw, h, bq * bq, D)

    def windows(x):  # [B, H, W, h, D] -> [B, nbh, nbw, h, win*win, D]
        x = F.pad(x, (0, 0, 0, 0, halo, halo, halo, halo)).index_select(1, rows).index_select(2, cols)
        x = x.view(x.shape[0], nbh, win, nbw, win, *x.shape[3:])
        return x.permute(0, 1, 3, 5, 2, 4, 6).reshape(x.shape[0], nbh, nbw, x.shape[5], win * win, x.shape[6])

    kb, vb = windows(k), windows(v)
    # timm's order of operations: scale * q.k + q.rel, or scale * (q.k + q.rel). The scalings are in
    # place (neither the matmul nor the add needs its output for backward); the rel add is not, as
    # an in-place add through a view makes autograd copy the whole gradient.
    logits = qb @ kb.transpose(-1, -2)  # [B, nbh, nbw, h, bq*bq, win*win]
    if not scale_pos_embed:
        logits *= scale
    rel = None  # [.., qy, qx, ky, kx], the two axes summed first as timm does
    for table, axis in ((rel_h, 0), (rel_w, 1)):
        if table is None:
            continue
        tab = (qb @ table.to(ct).t()).view(B, nbh, nbw, h, bq, bq, 2 * win - 1)
        g = _rel_to_abs(tab, bq, win, axis)  # [.., qy, qx, win]: ky (axis 0) or kx (axis 1)
        g = g[..., :, None] if axis == 0 else g[..., None, :]
        rel = g if rel is None else rel + g
    if rel is not None:
        logits = (logits.view(B, nbh, nbw, h, bq, bq, win, win) + rel).view(logits.shape)
    if scale_pos_embed:
        logits *= scale
    if padding == 'mask' and halo > 0:
        ones = torch.ones(1, H, W, 1, 1, dtype=ct, device=q.device)
        valid = windows(ones)[0, :, :, 0, :, 0] > 0  # [nbh, nbw, win*win]
        logits = logits.masked_fill(~valid[None, :, :, None, None, :], float('-inf'))
    out = logits.softmax(-1) @ vb  # [B, nbh, nbw, h, bq*bq, Dv]
    Dv = v.shape[-1]
    out = out.view(B, nbh, nbw, h, bq, bq, Dv).permute(0, 1, 4, 2, 5, 3, 6).reshape(B, nbh * bq, nbw * bq, h, Dv)
    return out.to(dtype)  # computed in fp32 for half inputs; returned in the input dtype
