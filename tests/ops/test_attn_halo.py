"""HaloNet blocked-halo attention: timm ``HaloAttn`` parity (zeros padding, stride 1 and strided
queries), a brute-force dense masked check (mask padding), gradcheck, errors, and backend parity."""
import pytest
import torch
import torch.nn.functional as F

from attn_parity import TOL, check_backend, make_inputs
from densekit.ops import halo_attention


def _timm_qkv(m, x):
    """q, k, v in densekit layout from a timm HaloAttn (its kv channels interleave per head)."""
    B, C, H, W = x.shape
    h, dq, dv = m.num_heads, m.dim_head_qk, m.dim_head_v
    q = m.q(x).view(B, h, dq, H, W).permute(0, 3, 4, 1, 2)
    kv = m.kv(x).view(B, h, dq + dv, H, W).permute(0, 3, 4, 1, 2)
    return q, kv[..., :dq], kv[..., dq:]


@pytest.mark.parametrize('scale_pos_embed', [False, True])
@pytest.mark.parametrize('block,halo,size', [(4, 1, (8, 12)), (2, 2, (6, 4))])
def test_matches_timm_halo_attn(scale_pos_embed, block, halo, size):
    halo_mod = pytest.importorskip('timm.layers.halo_attn')
    torch.manual_seed(0)
    m = halo_mod.HaloAttn(32, num_heads=2, block_size=block, halo_size=halo, qkv_bias=True,
                          scale_pos_embed=scale_pos_embed).eval()
    x = torch.randn(2, 32, *size)
    expected = m(x)
    q, k, v = _timm_qkv(m, x)
    out = halo_attention(q, k, v, block, halo, rel_h=m.pos_embed.height_rel, rel_w=m.pos_embed.width_rel,
                         scale=m.scale, scale_pos_embed=scale_pos_embed, padding='zeros', backend='reference')
    torch.testing.assert_close(out.permute(0, 3, 4, 1, 2).reshape(expected.shape), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize('stride,block,halo,size', [(2, 4, 1, (8, 12)), (2, 2, 2, (6, 4)), (2, 8, 3, (16, 8))])
def test_strided_matches_timm_halo_attn(stride, block, halo, size):
    """timm HaloAttn(stride=2): strided q projection, b/2 queries per block side attending to the
    full-resolution window; the op takes that q directly (query_stride). (timm allows stride 1 or 2;
    the op any divisor of the block, covered against the reference by the parity tests.)"""
    halo_mod = pytest.importorskip('timm.layers.halo_attn')
    torch.manual_seed(0)
    m = halo_mod.HaloAttn(32, num_heads=2, stride=stride, block_size=block, halo_size=halo, qkv_bias=True).eval()
    assert m.block_stride == stride  # no average-pool fallback: the strided path is tested
    x = torch.randn(2, 32, *size)
    B, C, H, W = x.shape
    h, dq = m.num_heads, m.dim_head_qk
    with torch.no_grad():  # flex runs no backward on CPU
        expected = m(x)
        q = m.q(x).view(B, h, dq, H // stride, W // stride).permute(0, 3, 4, 1, 2)
        kv = m.kv(x).view(B, h, dq + m.dim_head_v, H, W).permute(0, 3, 4, 1, 2)
    k, v = kv[..., :dq], kv[..., dq:]
    for backend in ('reference', 'flex'):
        if backend == 'flex':
            pytest.importorskip('torch.nn.attention.flex_attention')
        with torch.no_grad():
            out = halo_attention(q, k, v, block, halo, rel_h=m.pos_embed.height_rel, rel_w=m.pos_embed.width_rel,
                                 scale=m.scale, query_stride=stride, backend=backend)
        assert out.shape == (B, H // stride, W // stride, h, dq)
        torch.testing.assert_close(out.permute(0, 3, 4, 1, 2).reshape(expected.shape), expected, atol=1e-5, rtol=0,
                                   msg=lambda msg, b=backend: f'{b}: {msg}')


def brute_force_halo_masked(q, k, v, block, halo, rel_h, rel_w, scale):
    """Dense attention over the whole map with an explicit block-halo mask built by a loop."""
    B, H, W, h, D = q.shape
    win = block + 2 * halo
    S = H * W
    mask = torch.zeros(S, S, dtype=torch.bool)
    ry = torch.zeros(S, S, dtype=torch.long)
    rx = torch.zeros(S, S, dtype=torch.long)
    for y in range(H):
        for x in range(W):
            y0, x0 = (y // block) * block - halo, (x // block) * block - halo
            for ky in range(max(y0, 0), min(y0 + win, H)):
                for kx in range(max(x0, 0), min(x0 + win, W)):
                    mask[y * W + x, ky * W + kx] = True
                    ry[y * W + x, ky * W + kx] = ky - y + halo + win - 1
                    rx[y * W + x, ky * W + kx] = kx - x + halo + win - 1
    qf, kf, vf = (t.reshape(B, S, h, D).transpose(1, 2) for t in (q, k, v))  # [B, h, S, D]
    logits = (qf @ kf.transpose(-1, -2)) * scale
    logits = logits + torch.gather(qf @ rel_h.t(), -1, ry.expand(B, h, S, S))
    logits = logits + torch.gather(qf @ rel_w.t(), -1, rx.expand(B, h, S, S))
    out = logits.masked_fill(~mask, float('-inf')).softmax(-1) @ vf
    return out.transpose(1, 2).reshape(q.shape)


def test_masked_mode_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 6, 9, 2, 4, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    win = 3 + 2 * 2
    rel_h, rel_w = (torch.randn(2 * win - 1, 4, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    out = halo_attention(q, k, v, 3, 2, rel_h=rel_h, rel_w=rel_w, padding='mask', backend='reference')
    ref = brute_force_halo_masked(q, k, v, 3, 2, rel_h, rel_w, 4 ** -0.5)
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=0)
    go = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v, rel_h, rel_w), go)
    ref_grads = torch.autograd.grad(ref, (q, k, v, rel_h, rel_w), go)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_gradcheck_reference():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 4, 4, 1, 3, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    rel_h, rel_w = (torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    for padding in ('zeros', 'mask'):
        assert torch.autograd.gradcheck(
            lambda q, k, v, a, b: halo_attention(q, k, v, 2, 1, rel_h=a, rel_w=b, padding=padding,
                                                 backend='reference'), (q, k, v, rel_h, rel_w))


def test_errors():
    q = torch.randn(1, 8, 10, 2, 8)
    with pytest.raises(ValueError, match=r'\(8, 10\) is not a multiple of block_size 4'):
        halo_attention(q, q, q, 4, 1)
    q = torch.randn(1, 8, 8, 2, 8)
    with pytest.raises(ValueError, match='padding'):
        halo_attention(q, q, q, 4, 1, padding='reflect')
    with pytest.raises(ValueError, match=r'rel_h must have shape \(11, 8\)'):
        halo_attention(q, q, q, 4, 1, rel_h=torch.zeros(5, 8))
    with pytest.raises(ValueError, match='query_stride 3 must divide block_size 4'):
        halo_attention(q, q, q, 4, 1, query_stride=3)
    with pytest.raises(ValueError, match=r'q has shape \(1, 8, 8, 2, 8\), expected k subsampled by query_stride 2: '
                                         r'\(1, 4, 4, 2, 8\)'):
        halo_attention(q, q, q, 4, 1, query_stride=2)
    with pytest.raises(ValueError, match=r'v \(1, 8, 4, 2, 8\) must match k \(1, 8, 8, 2, 8\) in all but its head dim'):
        halo_attention(q, q, q[:, :, :4], 4, 1)


def _halo_op(block, halo, padding, scale_pos_embed=False, stride=1, qk_dim=None, v_dim=None):
    # The bias slot of the harness carries rel_h and rel_w stacked: [2, 2*win-1, D]. The harness's
    # inputs are all [B, H, W, heads, D]: strided queries are taken from q and the output is put
    # back at their places; head dims below D (qk_dim, v_dim) are slices, the output zero-padded.
    def op(q, k, v, rel, backend=None):
        D = q.shape[-1]
        q, k = q[..., :qk_dim], k[..., :qk_dim]
        v = v[..., :v_dim]
        rh, rw = (rel[0, :, :qk_dim], rel[1, :, :qk_dim]) if rel is not None else (None, None)
        out = halo_attention(q[:, ::stride, ::stride], k, v, block, halo, rel_h=rh, rel_w=rw, padding=padding,
                             scale_pos_embed=scale_pos_embed, query_stride=stride, backend=backend)
        out = F.pad(out, (0, D - out.shape[-1]))
        if stride == 1:
            return out
        full = out.new_zeros(*k.shape[:-1], D)
        full[:, ::stride, ::stride] = out
        return full
    return op


TRITON_CASES = [
    # (shape, block, halo, padding, with_rel)
    ((1, 8, 8, 1, 16), 4, 1, 'zeros', True),
    ((2, 8, 8, 1, 32), 8, 3, 'mask', True),
    ((1, 6, 9, 1, 16), 3, 2, 'zeros', False),
]
STRIDED_CASES = [
    # (shape, block, halo, padding, with_rel, query_stride): 2x2 queries per block (tile 16), a
    # one-query block, 4x4 queries of an 8x8 block with its window reaching two blocks away
    ((1, 8, 12, 2, 16), 4, 1, 'zeros', True, 2),
    ((2, 6, 9, 1, 16), 3, 2, 'mask', True, 3),
    ((1, 16, 8, 1, 32), 8, 3, 'zeros', True, 2),
]


@pytest.mark.parametrize('shape,block,halo,padding,with_rel', TRITON_CASES)
def test_triton_parity_fp32(triton_interpreter, shape, block, halo, padding, with_rel):
    win = block + 2 * halo
    check_backend(_halo_op(block, halo, padding), 'triton', shape,
                  (2, 2 * win - 1, shape[-1]) if with_rel else None, torch.float32)


@pytest.mark.parametrize('shape,block,halo,padding,with_rel,stride', STRIDED_CASES)
def test_strided_parity(triton_interpreter, shape, block, halo, padding, with_rel, stride):
    """Strided queries: Triton (interpreter) against the reference, forward and every gradient."""
    win = block + 2 * halo
    check_backend(_halo_op(block, halo, padding, stride=stride), 'triton', shape,
                  (2, 2 * win - 1, shape[-1]) if with_rel else None, torch.float32)


@pytest.mark.parametrize('shape,block,halo,padding,stride,qk_dim,v_dim', [
    ((1, 8, 8, 1, 32), 4, 1, 'zeros', 1, 16, None),  # value head 32, query / key 16 (timm qk_ratio)
    ((1, 16, 8, 2, 32), 8, 3, 'mask', 2, 16, None),
    ((2, 6, 9, 1, 24), 3, 2, 'zeros', 1, None, 8),  # value head 8 < query / key 24
    ((1, 8, 8, 1, 64), 4, 1, 'mask', 1, 16, None),  # fp32 value head 64: the row-chunked forward
])
def test_value_head_dim_differs_parity(triton_interpreter, shape, block, halo, padding, stride, qk_dim, v_dim):
    """v with its own head dim (timm dim_head_v): Triton (interpreter) against the reference."""
    win = block + 2 * halo
    check_backend(_halo_op(block, halo, padding, stride=stride, qk_dim=qk_dim, v_dim=v_dim), 'triton', shape,
                  (2, 2 * win - 1, shape[-1]), torch.float32)


@pytest.mark.parametrize('stride', [1, 2])
def test_value_head_dim_differs_matches_timm(stride):
    """timm HaloAttn with qk_ratio 0.5: dim_head_qk 16, dim_head_v 32, no padding of either."""
    halo_mod = pytest.importorskip('timm.layers.halo_attn')
    torch.manual_seed(0)
    m = halo_mod.HaloAttn(64, num_heads=2, stride=stride, block_size=4, halo_size=1, qk_ratio=0.5).eval()
    assert (m.dim_head_qk, m.dim_head_v) == (16, 32)
    x = torch.randn(2, 64, 8, 12)
    B, C, H, W = x.shape
    with torch.no_grad():
        expected = m(x)
        q = m.q(x).view(B, 2, 16, H // stride, W // stride).permute(0, 3, 4, 1, 2)
        kv = m.kv(x).view(B, 2, 48, H, W).permute(0, 3, 4, 1, 2)
    for backend in ('reference', 'flex'):
        if backend == 'flex':
            pytest.importorskip('torch.nn.attention.flex_attention')
        with torch.no_grad():
            out = halo_attention(q, kv[..., :16], kv[..., 16:], 4, 1, rel_h=m.pos_embed.height_rel,
                                 rel_w=m.pos_embed.width_rel, scale=m.scale, query_stride=stride, backend=backend)
        assert out.shape == (B, H // stride, W // stride, 2, 32)
        torch.testing.assert_close(out.permute(0, 3, 4, 1, 2).reshape(expected.shape), expected, atol=1e-5, rtol=0,
                                   msg=lambda msg, b=backend: f'{b}: {msg}')


def test_strided_reference_gradcheck():
    g = torch.Generator().manual_seed(2)
    q = torch.randn(1, 2, 3, 1, 3, generator=g, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(1, 4, 6, 1, 3, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    rel_h, rel_w = (torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    for padding in ('zeros', 'mask'):
        assert torch.autograd.gradcheck(
            lambda q, k, v, a, b: halo_attention(q, k, v, 2, 1, rel_h=a, rel_w=b, padding=padding, query_stride=2,
                                                 backend='reference'), (q, k, v, rel_h, rel_w))


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_triton_parity_low_precision(triton_interpreter, dtype):
    check_backend(_halo_op(4, 2, 'zeros', scale_pos_embed=True), 'triton', (1, 4, 8, 2, 32), (2, 15, 32), dtype)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_low_precision_reference_returns_input_dtype(dtype):
    """The reference computes half inputs in fp32 and returned that fp32 tensor (NA and window
    return the input dtype, as documented), so an fp16 HaloNet on CPU handed fp32 to its next layer."""
    q, k, v, rel, go = make_inputs((1, 8, 8, 2, 16), (2, 11, 16))
    leaves = [t.to(dtype).requires_grad_(True) for t in (q, k, v)]
    out = halo_attention(*leaves, 4, 1, rel_h=rel[0].to(dtype), rel_w=rel[1].to(dtype), backend='reference')
    out.backward(go.to(dtype))
    assert out.dtype == dtype and all(t.grad.dtype == dtype for t in leaves)
    check_backend(_halo_op(4, 1, 'zeros'), 'reference', (1, 8, 8, 2, 16), (2, 11, 16), dtype)


@pytest.mark.parametrize('padding', ['zeros', 'mask'])
def test_flex_forward_on_cpu_matches_reference(padding):
    pytest.importorskip('torch.nn.attention.flex_attention')
    q, k, v, rel, _ = make_inputs((2, 8, 12, 2, 16), (2, 11, 16))
    with torch.no_grad():
        ref = halo_attention(q, k, v, 4, 1, rel_h=rel[0], rel_w=rel[1], padding=padding, backend='reference')
        out = halo_attention(q, k, v, 4, 1, rel_h=rel[0], rel_w=rel[1], padding=padding, backend='flex')
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


@pytest.mark.gpu
@pytest.mark.parametrize('backend', ['reference', 'triton'])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('shape,block,halo,padding,with_rel', TRITON_CASES + [
    ((2, 64, 64, 8, 32), 8, 3, 'zeros', True), ((2, 32, 48, 4, 64), 8, 2, 'mask', True)])
def test_cuda_parity(requires_cuda, backend, dtype, shape, block, halo, padding, with_rel):
    win = block + 2 * halo
    check_backend(_halo_op(block, halo, padding), backend, shape,
                  (2, 2 * win - 1, shape[-1]) if with_rel else None, dtype, device='cuda')


STRIDED_GPU_CASE = ((2, 32, 64, 8, 32), 8, 3, 'zeros', True, 2)


@pytest.mark.gpu
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
@pytest.mark.parametrize('shape,block,halo,padding,with_rel,stride', STRIDED_CASES + [STRIDED_GPU_CASE])
def test_cuda_strided_parity(requires_cuda, dtype, shape, block, halo, padding, with_rel, stride):
    win = block + 2 * halo
    check_backend(_halo_op(block, halo, padding, stride=stride), 'triton', shape,
                  (2, 2 * win - 1, shape[-1]) if with_rel else None, dtype, device='cuda')


@pytest.mark.gpu
def test_cuda_strided_flex_parity(requires_cuda):
    shape, block, halo, padding, _, stride = STRIDED_GPU_CASE
    check_backend(_halo_op(block, halo, padding, stride=stride), 'flex', shape, (2, 2 * (block + 2 * halo) - 1, 32),
                  torch.bfloat16, device='cuda')


@pytest.mark.gpu
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_cuda_flex_parity(requires_cuda, dtype):
    check_backend(_halo_op(8, 3, 'zeros'), 'flex', (2, 64, 64, 8, 32), (2, 27, 32), dtype, device='cuda')


def test_triton_packed_qkv_views(triton_interpreter):
    """q, k, v as strided views of one packed projection, batch 1 (size-1 dims, odd strides)."""
    g = torch.Generator().manual_seed(3)
    packed = torch.randn(1, 8, 4, 3, 2, 16, generator=g)
    rel = torch.randn(2, 11, 16, generator=g)
    go = torch.randn(1, 8, 4, 2, 16, generator=g)
    grads = {}
    for backend in ('reference', 'triton'):
        x = packed.clone().requires_grad_(True)
        r = rel.clone().requires_grad_(True)
        q, k, v = x.unbind(3)
        halo_attention(q, k, v, 4, 1, rel_h=r[0], rel_w=r[1], backend=backend).backward(go)
        grads[backend] = (x.grad, r.grad)
    torch.testing.assert_close(grads['triton'][0], grads['reference'][0], atol=TOL[torch.float32]['dq'], rtol=0)
    torch.testing.assert_close(grads['triton'][1], grads['reference'][1], atol=TOL[torch.float32]['dbias'], rtol=0)


@pytest.mark.parametrize('padding', ['zeros', 'mask'])
def test_reference_tables_cached_in_inference_mode_serve_backward(padding):
    # The reference caches its window row indices; a first call under torch.inference_mode()
    # (an eval pass) must not leave inference tensors that a later training step saves for backward.
    q, k, v, rel, go = make_inputs((1, 10, 15, 2, 8), (2, 17, 8))  # win = 5 + 2 * 2
    with torch.inference_mode():
        expected = halo_attention(q, k, v, 5, 2, rel_h=rel[0], rel_w=rel[1], padding=padding, backend='reference')
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v, rel)]
    out = halo_attention(*leaves[:3], 5, 2, rel_h=leaves[3][0], rel_w=leaves[3][1], padding=padding,
                         backend='reference')
    out.backward(go)
    torch.testing.assert_close(out.detach(), expected, atol=0, rtol=0)
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in leaves)
