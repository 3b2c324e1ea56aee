"""Pure-PyTorch reference neighborhood attention (the spec and the CPU path).

Neighborhood Attention (Hassani et al., "Neighborhood Attention Transformer", CVPR 2023,
arXiv:2204.07143) and its dilated form (Hassani & Shi, "Dilated Neighborhood Attention
Transformer", arXiv:2209.15001), with the semantics of NATTEN <= 0.17.

Layouts: q, k, v, out ``[B, *spatial, heads, head_dim]`` (1 or 2 spatial dims); rpb
``[heads, 2*k_1-1, ..., 2*k_n-1]``; log-sum-exp ``[B, prod(spatial), heads]`` (float32).

Semantics, per spatial axis of length ``L`` with kernel ``k`` (odd) and dilation ``d``:
a query at ``i`` belongs to residue class ``r = i % d`` whose members ``r, r+d, ...`` form a
sub-axis of length ``Lc = ceil((L - r) / d)``; on that sub-axis the query sits at ``i' = i // d``
and attends to the ``k`` consecutive members starting at ``s = clamp(i' - k//2, 0, Lc - k)``
(the window is shifted, not shrunk, at the borders). Key ``t`` of the window is at
``r + d * (s + t)`` and uses bias ``rpb[k - 1 + (s + t - i')]``, i.e. the key-minus-query offset
in window units. ``L >= k * d`` is required so that every class holds a full window.

Two implementations of these semantics live here; neither forms an ``L x L`` score matrix:

* ``'tiled'`` (the default): the sub-grid of every residue class is cut into query tiles of
  ``th x tw`` (about 4-12 a side, picked per sub-grid size by a CPU cost model); each tile
  attends to the ``(th+kh-1) x (tw+kw-1)`` key region that contains all of its windows through
  one batched matmul, with the bias and the exact window mask added as one gathered term (the
  flat bias table is extended by a ``-inf`` entry for keys outside a query's window); plain
  autograd. The residue classes of an axis have at most two sub-axis lengths, so the ``d^2``
  classes run as at most four batched groups, gathered straight from the map. Dense GEMMs make
  it the fast CPU path; it computes ~3-4x the necessary logits (k=7) and keeps ~3-5 gathered
  copies of k and v for backward.
* ``'offsets'``: loops over chunks of kernel offsets, gathering only the keys of that chunk,
  with its own ``torch.autograd.Function`` that recomputes the probabilities in backward
  (flash-attention style): the least memory, but many small contractions (slower on CPU).

Both are checked against a brute-force dense implementation in the tests.
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence, Tuple

import torch
from torch.autograd.function import once_differentiable


@functools.lru_cache(maxsize=256)
def _axis_windows_cpu(length: int, kernel: int, dilation: int) -> Tuple[torch.Tensor, torch.Tensor]:
    pos = torch.arange(length)
    r = pos % dilation
    sub = pos // dilation
    class_len = (length - r + dilation - 1) // dilation
    start = torch.minimum(torch.clamp(sub - kernel // 2, min=0), class_len - kernel)
    t = torch.arange(kernel)
    key = r[:, None] + dilation * (start[:, None] + t[None, :])
    bias = kernel - 1 + start[:, None] + t[None, :] - sub[:, None]
    return key, bias


def axis_windows(length: int, kernel: int, dilation: int, device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Key positions and bias indices of every query of one axis, both ``[length, kernel]`` long."""
    key, bias = _axis_windows_cpu(length, kernel, dilation)
    return key.to(device), bias.to(device)


@functools.lru_cache(maxsize=64)
def _flat_tables_cpu(spatial: Tuple[int, ...], kernel: Tuple[int, ...], dilation: Tuple[int, ...]):
    """Flat key index and flat rpb index ``[prod(spatial), prod(kernel)]`` for an N-d grid."""
    n = len(spatial)
    key_flat = torch.zeros((), dtype=torch.long)
    bias_flat = torch.zeros((), dtype=torch.long)
    for a in range(n):
        key, bias = _axis_windows_cpu(spatial[a], kernel[a], dilation[a])
        # axis a's query dim sits at position a, its offset dim at position n + a
        shape = [1] * (2 * n)
        shape[a], shape[n + a] = spatial[a], kernel[a]
        key_stride = int(torch.tensor(spatial[a + 1:]).prod()) if a + 1 < n else 1
        bias_stride = int(torch.tensor([2 * k - 1 for k in kernel[a + 1:]]).prod()) if a + 1 < n else 1
        key_flat = key_flat + (key * key_stride).view(shape)
        bias_flat = bias_flat + (bias * bias_stride).view(shape)
    S = int(torch.tensor(spatial).prod())
    K = int(torch.tensor(kernel).prod())
    return key_flat.reshape(S, K).contiguous(), bias_flat.reshape(S, K).contiguous()


def flat_tables(spatial, kernel, dilation, device) -> Tuple[torch.Tensor, torch.Tensor]:
    key, bias = _flat_tables_cpu(tuple(spatial), tuple(kernel), tuple(dilation))
    return key.to(device), bias.to(device)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _chunks(K: int, chunk: int):
    for c0 in range(0, K, chunk):
        yield c0, min(c0 + chunk, K)


def _scores(qf, kf, rpb_flat, key_idx, bias_idx, c0, c1, scale):
    """Logits of offsets ``[c0, c1)``: ``[B, S, h, c]`` and the gathered keys ``[B, S, c, h, D]``."""
    B, S, h, D = qf.shape
    idx = key_idx[:, c0:c1]
    kt = kf.index_select(1, idx.reshape(-1)).view(B, S, c1 - c0, h, D)
    s = torch.einsum('bshd,bschd->bshc', qf, kt) * scale
    if rpb_flat is not None:
        # rpb_flat: [h, R]; gather -> [h, S, c] -> [S, h, c]
        s = s + rpb_flat[:, bias_idx[:, c0:c1]].permute(1, 0, 2)
    return s, kt, idx


def na_forward(qf, kf, vf, rpb_flat, key_idx, bias_idx, scale, chunk):
    """Forward on flattened inputs ``[B, S, h, D]`` (compute dtype). Returns ``(out, lse)``."""
    B, S, h, D = qf.shape
    K = key_idx.shape[1]
    logits = torch.empty(B, S, h, K, dtype=qf.dtype, device=qf.device)
    for c0, c1 in _chunks(K, chunk):
        logits[..., c0:c1] = _scores(qf, kf, rpb_flat, key_idx, bias_idx, c0, c1, scale)[0]
    lse = torch.logsumexp(logits, dim=-1)
    p = torch.exp(logits - lse[..., None])
    del logits
    out = torch.zeros_like(qf)
    for c0, c1 in _chunks(K, chunk):
        vt = vf.index_select(1, key_idx[:, c0:c1].reshape(-1)).view(B, S, c1 - c0, h, D)
        out += torch.einsum('bshc,bschd->bshd', p[..., c0:c1], vt)
    return out, lse


def na_backward(dout, qf, kf, vf, out, lse, rpb_flat, key_idx, bias_idx, scale, chunk, need_drpb):
    """Gradients of :func:`na_forward` by recomputation; returns ``(dq, dk, dv, drpb_flat)``."""
    B, S, h, D = qf.shape
    K = key_idx.shape[1]
    delta = (dout * out).sum(-1)  # [B, S, h]
    dq = torch.zeros_like(qf)
    dk = torch.zeros_like(kf)
    dv = torch.zeros_like(vf)
    drpb = torch.zeros_like(rpb_flat) if need_drpb else None
    for c0, c1 in _chunks(K, chunk):
        c = c1 - c0
        s, kt, idx = _scores(qf, kf, rpb_flat, key_idx, bias_idx, c0, c1, scale)
        p = torch.exp(s - lse[..., None])
        flat = idx.reshape(-1)
        vt = vf.index_select(1, flat).view(B, S, c, h, D)
        dv.index_add_(1, flat, torch.einsum('bshc,bshd->bschd', p, dout).reshape(B, S * c, h, D))
        dp = torch.einsum('bshd,bschd->bshc', dout, vt)
        ds = p * (dp - delta[..., None])
        dq += torch.einsum('bshc,bschd->bshd', ds, kt) * scale
        dk.index_add_(1, flat, (torch.einsum('bshc,bshd->bschd', ds, qf) * scale).reshape(B, S * c, h, D))
        if need_drpb:
            ds_h = ds.sum(0).permute(1, 0, 2).reshape(h, S * c)  # [h, S*c]
            drpb.index_add_(1, bias_idx[:, c0:c1].reshape(-1), ds_h)
    return dq, dk, dv, drpb


class NeighborhoodAttentionReference(torch.autograd.Function):
    """Autograd wrapper; inputs already validated and in ``[B, *spatial, h, D]`` layout."""

    @staticmethod
    def forward(ctx, q, k, v, rpb, kernel, dilation, scale):
        spatial = tuple(q.shape[1:-2])
        B, h, D = q.shape[0], q.shape[-2], q.shape[-1]
        ct = _compute_dtype(q.dtype)
        qf = q.reshape(B, -1, h, D).to(ct)
        kf = k.reshape(B, -1, h, D).to(ct)
        vf = v.reshape(B, -1, h, D).to(ct)
        rpb_flat = rpb.reshape(h, -1).to(ct) if rpb is not None else None
        key_idx, bias_idx = flat_tables(spatial, kernel, dilation, q.device)
        chunk = kernel[-1]
        out, lse = na_forward(qf, kf, vf, rpb_flat, key_idx, bias_idx, scale, chunk)
        ctx.save_for_backward(qf, kf, vf, out, lse, rpb_flat)
        ctx.meta = (spatial, kernel, dilation, scale, chunk, q.dtype, rpb is not None,
                    rpb.dtype if rpb is not None else None)
        return out.to(q.dtype).view(q.shape)

    @staticmethod
    @once_differentiable  # the backward is not itself differentiable: double backward is an error
    def backward(ctx, dout):
        qf, kf, vf, out, lse, rpb_flat = ctx.saved_tensors
        spatial, kernel, dilation, scale, chunk, dtype, has_rpb, rpb_dtype = ctx.meta
        shape = dout.shape
        B, h, D = shape[0], shape[-2], shape[-1]
        key_idx, bias_idx = flat_tables(spatial, kernel, dilation, dout.device)
        need_drpb = has_rpb and ctx.needs_input_grad[3]
        dq, dk, dv, drpb = na_backward(dout.reshape(B, -1, h, D).to(qf.dtype), qf, kf, vf, out, lse,
                                       rpb_flat, key_idx, bias_idx, scale, chunk, need_drpb)
        drpb_out = None
        if need_drpb:
            drpb_out = drpb.view(h, *[2 * kk - 1 for kk in kernel]).to(rpb_dtype)
        return (dq.to(dtype).view(shape), dk.to(dtype).view(shape), dv.to(dtype).view(shape),
                drpb_out, None, None, None)


@functools.lru_cache(maxsize=128)
def _axis_tiles(Lc: int, kernel: int, tile: int):
    """Tiling of one undilated sub-axis: key region rows ``[nT, R]``, query rows ``[nT, T]``
    (clamped), window mask ``[nT, T, R]`` and bias index ``[nT, T, R]``."""
    nt = -(-Lc // tile)
    region = min(tile + kernel - 1, Lc)
    t0 = torch.arange(nt) * tile
    first = torch.clamp(t0 - kernel // 2, 0, Lc - kernel)
    rs = torch.minimum(first, torch.full_like(first, Lc - region))
    rows = rs[:, None] + torch.arange(region)
    qpos = t0[:, None] + torch.arange(tile)
    # padding rows past Lc repeat the last query (cropped later); masking them fully instead would
    # give NaN probabilities, and NaN * 0 gradients would poison dv
    qpos = torch.clamp(qpos, max=Lc - 1)
    qstart = torch.clamp(qpos - kernel // 2, 0, Lc - kernel)
    rel = rows[:, None, :] - qstart[:, :, None]
    allowed = (rel >= 0) & (rel < kernel)
    bias = torch.clamp(rows[:, None, :] - qpos[:, :, None] + kernel - 1, 0, 2 * kernel - 2)
    return rows, qpos, allowed, bias


@functools.lru_cache(maxsize=128)
def _choose_tile(Hc: int, Wc: int, kh: int, kw: int) -> Tuple[int, int]:
    """Query tile (4-12 a side) of a ``Hc x Wc`` sub-grid minimising a CPU cost model fitted to
    timings on a 2-core x86 CPU: a tile of ``M`` queries and ``N`` region keys costs about
    ``N * (M + 32)`` (logits and softmax, plus the gathered key / value copies), summed over the
    tiles, so padded queries of a tile that does not divide the sub-grid count as work."""
    def axis(L, k, t):
        t = min(t, L)
        return -(-L // t), t, min(t + k - 1, L)
    best = None
    for th in range(4, 13):
        for tw in range(4, 13):
            nh, th_, rh = axis(Hc, kh, th)
            nw, tw_, rw = axis(Wc, kw, tw)
            key = (nh * nw * rh * rw * (th_ * tw_ + 32), -th_ * tw_)
            if best is None or key < best[0]:
                best = (key, (th_, tw_))
    return best[1]


def _axis_groups(length: int, dilation: int):
    """Residue classes of one axis batched by sub-axis length: ``[(r0, r1, Lc), ...]`` (at most
    two: the first ``length % dilation`` classes are one longer than the rest)."""
    long_len, n_long = -(-length // dilation), length % dilation
    if n_long == 0:
        return [(0, dilation, length // dilation)]
    return [(0, n_long, long_len), (n_long, dilation, long_len - 1)]


def _group_tile(Hc: int, Wc: int, kernel: Tuple[int, int], tile: Optional[Tuple[int, int]]) -> Tuple[int, int]:
    if tile is None:
        return _choose_tile(Hc, Wc, kernel[0], kernel[1])
    return min(tile[0], Hc), min(tile[1], Wc)


@functools.lru_cache(maxsize=64)
def _group_tiles_cpu(group_h: Tuple[int, int, int], group_w: Tuple[int, int, int], dilation: Tuple[int, int],
                     kernel: Tuple[int, int], tile: Optional[Tuple[int, int]]):
    """Index tables of one group of residue classes (all of sub-grid size ``Hc x Wc``).

    Returns global key rows / columns ``[nres*nT*R]`` and query rows / columns ``[nres*nT*T]``
    (ordered residue, tile, position) and the bias index ``[nTh, nTw, TH*TW, RH*RW]`` into the
    flat ``(2kh-1)(2kw-1)`` table extended by one ``-inf`` entry that marks keys outside a query's
    window (so bias and mask are one gather). Built outside inference mode: a cached inference
    tensor could not be saved for a later backward.
    """
    with torch.inference_mode(False):
        (rh0, rh1, Hc), (rw0, rw1, Wc) = group_h, group_w
        (kh, kw), (dh, dw) = kernel, dilation
        th, tw = _group_tile(Hc, Wc, kernel, tile)
        rows_h, q_h, al_h, b_h = _axis_tiles(Hc, kh, th)
        rows_w, q_w, al_w, b_w = _axis_tiles(Wc, kw, tw)

        def to_global(local, r0, r1, d):  # class coordinates -> map coordinates, residue outermost
            return (torch.arange(r0, r1)[:, None, None] + d * local[None]).reshape(-1)

        # [nTh, nTw, TH, TW, RH, RW] -> [nTh, nTw, TH*TW, RH*RW]
        allowed = al_h[:, None, :, None, :, None] & al_w[None, :, None, :, None, :]
        bias = b_h[:, None, :, None, :, None] * (2 * kw - 1) + b_w[None, :, None, :, None, :]
        bias = bias.masked_fill(~allowed, (2 * kh - 1) * (2 * kw - 1))
        shape = (rows_h.shape[0], rows_w.shape[0], th * tw, rows_h.shape[1] * rows_w.shape[1])
        return (to_global(rows_h, rh0, rh1, dh), to_global(rows_w, rw0, rw1, dw),
                to_global(q_h, rh0, rh1, dh), to_global(q_w, rw0, rw1, dw), bias.reshape(shape).contiguous())


def _na_tiled_group(q, k, v, bias_ext, group_h, group_w, kernel, dilation, scale, tile):
    """NA of one group of residue classes of ``[B, H, W, h, D]`` (compute dtype) by query tiles.

    Every tile attends to the key region that contains all of its windows through one batched
    matmul; the classes of the group and their tiles form the batch. Returns
    ``[B, Hc, nres_h, Wc, nres_w, h, D]`` (query ``(i, r)`` of an axis sits at ``r + d * i``).
    """
    B, H, W, h, D = q.shape
    (rh0, rh1, Hc), (rw0, rw1, Wc) = group_h, group_w
    nrh, nrw = rh1 - rh0, rw1 - rw0
    th, tw = _group_tile(Hc, Wc, kernel, tile)
    rows_h, rows_w, q_h, q_w, bias_idx = (t.to(q.device) for t in _group_tiles_cpu(
        group_h, group_w, tuple(dilation), tuple(kernel), tile))
    nth, ntw, M, N = bias_idx.shape

    def tiles(x, ih, iw):  # -> [B*nrh*nrw, h, nTh, nTw, a*b, D]; two gathers, each a cheap copy backward
        x = x.index_select(1, ih).index_select(2, iw)
        a, b = ih.numel() // (nrh * nth), iw.numel() // (nrw * ntw)
        x = x.view(B, nrh, nth, a, nrw, ntw, b, h, D)
        # explicit sizes, not -1: with B = 0 a -1 is ambiguous and reshape raises
        return x.permute(0, 1, 4, 7, 2, 5, 3, 6, 8).reshape(B * nrh * nrw, h, nth, ntw, a * b, D)

    qt, kt, vt = tiles(q * scale, q_h, q_w), tiles(k, rows_h, rows_w), tiles(v, rows_h, rows_w)
    logits = qt @ kt.transpose(-1, -2)  # [B*nrh*nrw, h, nTh, nTw, M, N]
    # bias and window mask in one gather, shared by the batch and the classes of the group (the
    # leading dim, so its gradient is a cheap leading-dim sum); added in place: the matmul's
    # backward needs its inputs, not its output
    logits += bias_ext.index_select(1, bias_idx.reshape(-1)).view(-1, nth, ntw, M, N)
    out = logits.softmax(-1) @ vt  # [B*nrh*nrw, h, nTh, nTw, TH*TW, D]
    out = out.view(B, nrh, nrw, h, nth, ntw, th, tw, D).permute(0, 4, 6, 1, 5, 7, 2, 3, 8)
    return out.reshape(B, nth * th, nrh, ntw * tw, nrw, h, D)[:, :Hc, :, :Wc]


def na_reference_tiled(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel: Sequence[int],
                       dilation: Sequence[int], rpb: Optional[torch.Tensor], scale: float,
                       tile: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """Tiled reference (see module docstring); 1-D runs as a height-1 2-D problem.

    Args:
        tile: query tile ``(th, tw)``; None picks one per sub-grid (:func:`_choose_tile`).
    """
    one_d = q.dim() == 4
    if one_d:
        q, k, v = q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)
        kernel, dilation, tile = (1, kernel[0]), (1, dilation[0]), (1, 64) if tile is None else tile
    kernel, dilation = tuple(kernel), tuple(dilation)
    tile = tuple(tile) if tile is not None else None
    ct = _compute_dtype(q.dtype)
    B, H, W, h, D = q.shape
    qc, kc, vc = q.to(ct), k.to(ct), v.to(ct)
    # flat bias table plus one -inf column: the index of keys outside a query's window
    R = (2 * kernel[0] - 1) * (2 * kernel[1] - 1)
    if rpb is not None:
        table = rpb.to(ct).reshape(h, R)
    else:
        table = qc.new_zeros(1, R)
    bias_ext = torch.cat([table, table.new_full((table.shape[0], 1), float('-inf'))], 1)
    groups_h, groups_w = _axis_groups(H, dilation[0]), _axis_groups(W, dilation[1])
    dh, dw = dilation
    if len(groups_h) == 1 and len(groups_w) == 1:
        # every class has the same sub-grid: [B, Hc, dh, Wc, dw] is the map itself
        out = _na_tiled_group(qc, kc, vc, bias_ext, groups_h[0], groups_w[0], kernel, dilation, scale, tile)
        out = out.reshape(B, H, W, h, D)
    else:
        Hp, Wp = -(-H // dh) * dh, -(-W // dw) * dw
        out = qc.new_empty(B, Hp // dh, dh, Wp // dw, dw, h, D)
        for gh in groups_h:
            for gw in groups_w:
                (rh0, rh1, Hc), (rw0, rw1, Wc) = gh, gw
                out[:, :Hc, rh0:rh1, :Wc, rw0:rw1] = _na_tiled_group(qc, kc, vc, bias_ext, gh, gw, kernel,
                                                                    dilation, scale, tile)
        out = out.view(B, Hp, Wp, h, D)[:, :H, :W].contiguous()
    out = out.to(q.dtype)
    return out.squeeze(1) if one_d else out


def na_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel: Sequence[int],
                 dilation: Sequence[int], rpb: Optional[torch.Tensor], scale: float,
                 impl: str = 'tiled') -> torch.Tensor:
    """Reference N-d neighborhood attention on validated inputs (see module docstring).

    Args:
        impl: ``'tiled'`` (default, fast) or ``'offsets'`` (least memory).
    """
    if impl == 'tiled':
        return na_reference_tiled(q, k, v, kernel, dilation, rpb, scale)
    if impl == 'offsets':
        return NeighborhoodAttentionReference.apply(q, k, v, rpb, tuple(kernel), tuple(dilation), float(scale))
    raise ValueError(f"reference impl must be 'tiled' or 'offsets', got {impl!r}")
