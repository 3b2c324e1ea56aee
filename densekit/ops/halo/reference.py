"""Pure-PyTorch reference blocked-halo attention (HaloNet) — the spec and the CPU path.

HaloNet: Vaswani et al., "Scaling Local Self-Attention for Parameter Efficient Visual Backbones",
CVPR 2021, arXiv:2103.12731.

Layouts: q, k, v, out ``[B, H, W, heads, head_dim]`` with ``H % b == W % b == 0`` (b = block
size); optional relative embeddings ``rel_h``, ``rel_w``: ``[2*win-1, head_dim]`` shared by all
heads, ``win = b + 2*halo`` (timm's ``PosEmbedRel.height_rel`` / ``width_rel``).

Semantics: the map is cut into ``b x b`` query blocks; block ``(I, J)`` attends to the
``win x win`` key window whose top-left corner is ``(I*b - halo, J*b - halo)``. Logits are
``scale * q.k + q.rel_h[ky - qy + halo + win - 1] + q.rel_w[kx - qx + halo + win - 1]`` with
absolute coordinates (timm's ``rel_logits_1d``), or ``scale * (q.k + rel)`` when
``scale_pos_embed``. Window positions outside the map are handled by ``padding``:

* ``'zeros'`` — timm ``HaloAttn`` numerics: the keys / values there are zero vectors (timm pads
  *after* the kv projection), so they still take part in the softmax with logit ``rel`` only;
* ``'mask'`` — they are excluded from the softmax (what a masked kernel would do).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def halo_rel_logits(q: torch.Tensor, rel: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Per-query relative-logit table ``q . rel``: ``[B, H, W, heads, 2*win-1]`` (or None)."""
    if rel is None:
        return None
    return torch.einsum('bhwnd,rd->bhwnr', q, rel.to(q.dtype))


def halo_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block: int, halo: int,
                   rel_h: Optional[torch.Tensor], rel_w: Optional[torch.Tensor], scale: float,
                   scale_pos_embed: bool, padding: str) -> torch.Tensor:
    """Reference halo attention on validated inputs (see module docstring)."""
    B, H, W, h, D = q.shape
    win = block + 2 * halo
    nbh, nbw = H // block, W // block
    ct = torch.float64 if q.dtype == torch.float64 else torch.float32
    q, k, v = q.to(ct), k.to(ct), v.to(ct)

    # queries: [B, nbh, nbw, h, b*b, D]
    qb = q.view(B, nbh, block, nbw, block, h, D).permute(0, 1, 3, 5, 2, 4, 6).reshape(B, nbh, nbw, h, block * block, D)

    def windows(x):  # [B, H, W, h, D] -> [B, nbh, nbw, h, win*win, D]
        x = F.pad(x, (0, 0, 0, 0, halo, halo, halo, halo))
        x = x.unfold(1, win, block).unfold(2, win, block)  # [B, nbh, nbw, h, D, win, win]
        return x.permute(0, 1, 2, 3, 5, 6, 4).reshape(*x.shape[:4], win * win, x.shape[4])

    kb, vb = windows(k), windows(v)
    logits = qb @ kb.transpose(-1, -2)  # [B, nbh, nbw, h, b*b, win*win]
    rel = None
    # relative logits: query (qy, qx) in block, key (ky, kx) in window -> index ky - qy + win - 1
    t = torch.arange(block, device=q.device)
    u = torch.arange(win, device=q.device)
    ridx = (u[None, :] - t[:, None] + win - 1)  # [b, win]
    if rel_h is not None or rel_w is not None:
        rel = 0
        for table, axis in ((rel_h, 0), (rel_w, 1)):
            if table is None:
                continue
            tab = torch.einsum('bnmhqd,rd->bnmhqr', qb, table.to(ct))  # [.., b*b, 2win-1]
            tab = tab.view(B, nbh, nbw, h, block, block, 2 * win - 1)
            if axis == 0:  # depends on (qy, ky): gather along r with ridx[qy]
                g = tab[..., ridx]  # [.., qy, qx, b(qy'), win]
                g = torch.diagonal(g, dim1=4, dim2=6)  # [.., qx, win, qy]
                g = g.permute(0, 1, 2, 3, 6, 4, 5)[..., :, :, :, None]  # [.., qy, qx, win(ky), 1]
            else:
                g = tab[..., ridx]  # [.., qy, qx, b(qx'), win]
                g = torch.diagonal(g, dim1=5, dim2=6)  # [.., qy, win, qx]
                g = g.transpose(-1, -2)[..., :, :, None, :]  # [.., qy, qx, 1, win(kx)]
            rel = rel + g
        rel = rel.reshape(B, nbh, nbw, h, block * block, win * win)
    if scale_pos_embed:
        logits = (logits + rel) * scale if rel is not None else logits * scale
    else:
        logits = logits * scale + rel if rel is not None else logits * scale
    if padding == 'mask' and halo > 0:
        ones = torch.ones(1, H, W, 1, 1, dtype=ct, device=q.device)
        valid = windows(ones)[0, :, :, 0, :, 0] > 0  # [nbh, nbw, win*win]
        logits = logits.masked_fill(~valid[None, :, :, None, None, :], float('-inf'))
    out = logits.softmax(-1) @ vb  # [B, nbh, nbw, h, b*b, D]
    out = out.view(B, nbh, nbw, h, block, block, D).permute(0, 1, 4, 2, 5, 3, 6).reshape(B, H, W, h, D)
    return out
