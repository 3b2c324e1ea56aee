"""Pure-PyTorch reference deformable sampled-key attention — the spec and the CPU path.

DAT / DAT++ (Xia et al., "Vision Transformer with Deformable Attention", CVPR 2022,
arXiv:2201.00520; "DAT++: Spatially Dynamic Vision Transformer with Deformable Attention",
arXiv:2309.01430), the attention step of ``DAttentionBaseline`` with its interpolated relative
position bias (``use_pe=True``, neither ``dwc_pe`` nor ``fixed_pe`` nor ``log_cpb``).

Layouts: q ``[B, H, W, heads, head_dim]`` (queries on an ``H x W`` grid), k ``[B, N, heads,
head_dim]`` and v ``[B, N, heads, head_dim_v]`` (the ``N`` sampled keys / values), ``pos``
``[B, G, N, 2]`` the sampling positions ``(y, x)`` of the ``G`` offset groups, normalised to
``[-1, 1]`` over the map (``grid_sample`` with ``align_corners=True``), ``table`` ``[heads, Th,
Tw]``; output ``[B, H, W, heads, head_dim_v]``. Head ``h`` belongs to group ``h // (heads / G)``.

Semantics (the official code): query ``(i, j)`` sits at ``(i / (H - 1) * 2 - 1, j / (W - 1) * 2
- 1)`` (a side of length 1 at 0, where the official code divides 0 by 0); the bias of query ``m``
and key ``n`` in head ``h`` is ``table[h]`` sampled bilinearly (``align_corners=True``, zero
outside) at the displacement ``(q_m - pos[g(h), n]) / 2``; ``out = softmax(scale * q . k +
bias) @ v`` over the ``N`` keys.

Implementation: the logits and the bias (``F.grid_sample`` of the table, as the official code)
exist for one chunk of query rows at a time, never as a whole ``[B, heads, H * W, N]`` tensor in
the forward pass. fp32 and float64 run in their own precision; lower precisions in fp32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# Upper bound on the elements of one chunk's logits (``B * heads * rows * N``).
_CHUNK_LOGITS = 1 << 24


def query_coords(n: int, dtype: torch.dtype, device) -> torch.Tensor:
    """``[n]`` normalised query coordinates along one side (official ``_get_q_grid``)."""
    if n == 1:
        return torch.zeros(1, dtype=dtype, device=device)
    return torch.arange(n, dtype=dtype, device=device).div(n - 1.0).mul(2.0).sub(1.0)


def query_grid(H: int, W: int, dtype: torch.dtype, device) -> torch.Tensor:
    """``[H * W, 2]`` normalised ``(y, x)`` positions of the queries, row-major."""
    ys, xs = torch.meshgrid(query_coords(H, dtype, device), query_coords(W, dtype, device), indexing='ij')
    return torch.stack((ys, xs), -1).reshape(H * W, 2)


def deform_sampled_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor,
                             table: torch.Tensor, scale) -> torch.Tensor:
    """Deformable sampled-key attention on validated inputs (layouts in the module docstring)."""
    B, H, W, h, _ = q.shape
    N = k.shape[1]
    G = pos.shape[1]
    Th, Tw = table.shape[1:]
    dtype = q.dtype
    compute = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    qf = q.to(compute).reshape(B, H * W, h, -1).transpose(1, 2)  # B h M D
    kf = k.to(compute).transpose(1, 2)  # B h N D
    vf = v.to(compute).transpose(1, 2)  # B h N Dv
    posf = pos.to(compute).reshape(B * G, 1, N, 2)
    grid = query_grid(H, W, compute, q.device)
    tbl = table.to(compute)[None].expand(B, h, Th, Tw).reshape(B * G, h // G, Th, Tw)
    M = H * W
    chunk = max(1, min(M, _CHUNK_LOGITS // max(1, B * h * N)))
    outs = []
    for m0 in range(0, M, chunk):
        m1 = min(M, m0 + chunk)
        logits = (qf[:, :, m0:m1] @ kf.transpose(-1, -2)) * scale
        disp = (grid[None, m0:m1, None, :] - posf).mul(0.5)  # BG, rows, N, (y, x)
        bias = F.grid_sample(tbl, disp[..., (1, 0)], mode='bilinear', align_corners=True)  # BG, h/G, rows, N
        logits = logits + bias.reshape(B, h, m1 - m0, N)
        outs.append(logits.softmax(-1) @ vf)
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
    return out.transpose(1, 2).reshape(B, H, W, h, -1).to(dtype)
