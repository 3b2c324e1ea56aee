"""Swin window attention and the densekit.layers.window helpers: numerics against timm's Swin
and mmdet's (official-port) ShiftWindowMSA, gradcheck, errors, and backend parity."""
import pytest
import torch

from attn_parity import TOL, check_backend, make_inputs
from densekit.layers.window import (pad_to_multiple, relative_position_bias, relative_position_index,
                                    rpb_dense_to_table, rpb_table_to_dense, shift_window_mask, unpad,
                                    window_partition, window_reverse)
from densekit.ops import window_attention


def test_partition_reverse_roundtrip_and_padding():
    x = torch.randn(2, 13, 17, 5)
    xp, size = pad_to_multiple(x, (7, 6))
    assert xp.shape == (2, 14, 18, 5) and size == (13, 17)
    assert torch.equal(xp[:, 13:], torch.zeros_like(xp[:, 13:]))
    w = window_partition(xp, (7, 6))
    assert w.shape == (2 * 2 * 3, 7, 6, 5)
    assert torch.equal(w[1], xp[0, 0:7, 6:12])  # window index runs row-major, batch outermost
    assert torch.equal(unpad(window_reverse(w, (7, 6), 14, 18), size), x)
    with pytest.raises(ValueError, match='not a multiple'):
        window_partition(x, 7)


def test_relative_position_index_and_mask_match_timm():
    swin = pytest.importorskip('timm.models.swin_transformer')
    assert torch.equal(relative_position_index((7, 5)), swin.get_relative_position_index(7, 5))
    blk = swin.SwinTransformerBlock(16, (14, 21), num_heads=2, window_size=7, shift_size=3)
    assert torch.equal(shift_window_mask((14, 21), 7, 3), blk.attn_mask)
    table = torch.randn(13 * 9, 3)
    assert torch.equal(rpb_dense_to_table(rpb_table_to_dense(table, (7, 5))), table)
    dense_bias = relative_position_bias(rpb_table_to_dense(table, (7, 5)), (7, 5))
    assert torch.equal(dense_bias, table[swin.get_relative_position_index(7, 5)].permute(2, 0, 1))


@pytest.mark.parametrize('shift', [0, 3])
def test_matches_timm_window_attention(shift):
    swin = pytest.importorskip('timm.models.swin_transformer')
    torch.manual_seed(0)
    blk = swin.SwinTransformerBlock(32, (14, 21), num_heads=2, window_size=7, shift_size=shift).eval()
    torch.nn.init.normal_(blk.attn.relative_position_bias_table, std=0.5)
    x = torch.randn(2, 14, 21, 32)
    expected = blk._attn(x)
    a = blk.attn
    q, k, v = a.qkv(x).view(2, 14, 21, 3, 2, 16).unbind(3)
    out = window_attention(q, k, v, 7, shift, rpb=rpb_table_to_dense(a.relative_position_bias_table, 7),
                           scale=a.scale, backend='reference')
    torch.testing.assert_close(a.proj(out.reshape(2, 14, 21, 32)), expected, atol=1e-5, rtol=0)
    # the bias gradient reaches the official table through the dense view
    a.proj(out.reshape(2, 14, 21, 32)).sum().backward()
    assert a.relative_position_bias_table.grad is not None


def _naive_window_attention(q, k, v, window, shift, rpb, scale):
    """Swin (shifted) window attention as one dense masked softmax over the whole map, written from
    the definition: after the cyclic roll by -shift, token (y, x) sits at ((y-sh) % H, (x-sw) % W);
    a pair attends iff it shares a window and a shift region (Swin's slices [0, L-w), [L-w, L-s),
    [L-s, L)); the bias is indexed by the query-minus-key offset inside the window."""
    B, H, W, h, D = q.shape
    (wh, ww), (sh, sw) = window, shift
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing='ij')
    ry, rx = ((ys - sh) % H).reshape(-1), ((xs - sw) % W).reshape(-1)

    def region(c, L, w, s):
        return (c >= L - w).long() + (c >= L - s).long() if s else torch.zeros_like(c)

    lab = region(ry, H, wh, sh) * 3 + region(rx, W, ww, sw)
    win = (ry // wh) * (W // ww) + rx // ww
    mask = (win[:, None] == win[None, :]) & (lab[:, None] == lab[None, :])
    dy = (ry % wh)[:, None] - (ry % wh)[None, :] + wh - 1
    dx = (rx % ww)[:, None] - (rx % ww)[None, :] + ww - 1
    qf, kf, vf = (t.reshape(B, H * W, h, D).transpose(1, 2) for t in (q, k, v))
    logits = ((qf @ kf.transpose(-1, -2)) * scale + rpb[:, dy, dx]).masked_fill(~mask, float('-inf'))
    return (logits.softmax(-1) @ vf).transpose(1, 2).reshape(q.shape)


@pytest.mark.parametrize('shape,window,shift', [((1, 8, 12, 2, 8), (4, 6), (2, 3)), ((2, 9, 20, 1, 8), (9, 10), (4, 5)),
                                                ((1, 8, 8, 1, 8), (4, 4), (1, 3)), ((1, 6, 8, 1, 8), (2, 4), (0, 2))])
def test_reference_matches_naive_dense_non_square_and_uneven_shift(shape, window, shift):
    """timm's check above is square with shift = window // 2; here non-square windows, shifts that
    differ per axis (one of them 0) and are not half the window, against the dense definition in
    float64, output and every gradient."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(3))
    rpb = torch.randn(shape[-2], 2 * window[0] - 1, 2 * window[1] - 1, generator=g, dtype=torch.float64)
    go = torch.randn(shape, generator=g, dtype=torch.float64)
    res = []
    for fn in (lambda *a: window_attention(*a[:3], window, shift, rpb=a[3], backend='reference'),
               lambda *a: _naive_window_attention(*a[:3], window, shift, a[3], shape[-1] ** -0.5)):
        leaves = [t.clone().requires_grad_(True) for t in (q, k, v, rpb)]
        out = fn(*leaves)
        out.backward(go)
        res.append([out.detach()] + [t.grad for t in leaves])
    for a, e in zip(*res):
        torch.testing.assert_close(a, e, atol=1e-12, rtol=0)


def test_official_padding_matches_mmdet_shift_window_msa():
    """Odd map size: pad before qkv (official dense-prediction Swin), shift, attend, crop."""
    pytest.importorskip('mmdet')
    import densekit  # noqa: F401  (serves mmcv._ext for mmdet's imports)
    from mmdet.models.backbones.swin import ShiftWindowMSA
    torch.manual_seed(0)
    msa = ShiftWindowMSA(32, 2, 7, shift_size=3).eval()
    torch.nn.init.normal_(msa.w_msa.relative_position_bias_table, std=0.5)
    H, W = 13, 17
    x = torch.randn(2, H * W, 32)
    expected = msa(x, (H, W))
    xp, size = pad_to_multiple(x.view(2, H, W, 32), 7)
    w = msa.w_msa
    q, k, v = w.qkv(xp).view(2, xp.shape[1], xp.shape[2], 3, 2, 16).unbind(3)
    out = window_attention(q, k, v, 7, 3, rpb=rpb_table_to_dense(w.relative_position_bias_table, 7),
                           scale=w.scale, backend='reference')
    out = unpad(w.proj(out.reshape(2, xp.shape[1], xp.shape[2], 32)), size).reshape(2, H * W, 32)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_gradcheck_reference():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 6, 4, 2, 3, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    rpb = torch.randn(2, 5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda q, k, v, r: window_attention(q, k, v, (3, 2), (1, 1), rpb=r, backend='reference'), (q, k, v, rpb))


def test_errors():
    q = torch.randn(1, 13, 14, 2, 8)
    with pytest.raises(ValueError, match=r'\(13, 14\) is not a multiple of window \(7, 7\)'):
        window_attention(q, q, q, 7)
    q = torch.randn(1, 14, 14, 2, 8)
    with pytest.raises(ValueError, match='shift'):
        window_attention(q, q, q, 7, shift=7)
    with pytest.raises(ValueError, match=r'rpb must have shape \(2, 13, 13\)'):
        window_attention(q, q, q, 7, rpb=torch.zeros(13, 13))


def _win_op(window, shift, triton_config=None):
    def op(q, k, v, rpb, backend=None):
        return window_attention(q, k, v, window, shift, rpb=rpb, backend=backend, triton_config=triton_config)
    return op


TRITON_CASES = [
    # (shape, window, shift, with_rpb)
    ((1, 14, 21, 2, 16), 7, 3, True),
    ((2, 8, 12, 1, 32), (4, 6), (2, 3), True),
    ((1, 6, 6, 1, 64), 3, 0, False),
    # windows of several chunks (see triton._tiling): Swin-B/L 384's 12x12 (144 tokens, the last
    # chunk mostly padding) and an awkward 9x10 (90 tokens) with head_dim 24
    ((1, 12, 24, 2, 16), 12, 6, True),
    ((1, 9, 20, 1, 24), (9, 10), (4, 5), True),
]


@pytest.mark.parametrize('shape,window,shift,with_rpb', TRITON_CASES)
def test_triton_parity_fp32(triton_interpreter, shape, window, shift, with_rpb):
    w = (window, window) if isinstance(window, int) else window
    check_backend(_win_op(window, shift), 'triton', shape, (shape[-2], 2 * w[0] - 1, 2 * w[1] - 1) if with_rpb else None,
                  torch.float32)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('shape,window,shift', [((1, 14, 14, 2, 32), 7, 3), ((1, 12, 12, 1, 32), 12, 6)])
def test_triton_parity_low_precision(triton_interpreter, dtype, shape, window, shift):
    check_backend(_win_op(window, shift), 'triton', shape, (shape[-2], 2 * window - 1, 2 * window - 1), dtype)


def test_triton_multi_chunk_bias_gradient_summed_over_images(triton_interpreter):
    """A 12x12 window spans several key chunks, so each backward program adds its dS columns of
    every image into the dS buffer (read-add-write); force chunks of 2 + 1 images."""
    import densekit.ops.window.triton as wt
    config = dict(min_programs=10)
    # fp32: one window x 5 key chunks of 32 tokens x 1 head = 5 programs per image
    assert wt._tiling(144, 16, torch.float32)[:2] == (32, 5) and wt._image_chunks(3, 5, config) == (2, 2)
    check_backend(_win_op(12, 6, config), 'triton', (3, 12, 12, 1, 16), (1, 23, 23), torch.float32)


def test_flex_forward_on_cpu_matches_reference():
    pytest.importorskip('torch.nn.attention.flex_attention')
    q, k, v, rpb, _ = make_inputs((2, 14, 21, 2, 16), (2, 13, 13))
    with torch.no_grad():
        ref = window_attention(q, k, v, 7, 3, rpb=rpb, backend='reference')
        out = window_attention(q, k, v, 7, 3, rpb=rpb, backend='flex')
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize('shape,window,shift', [((2, 14, 21, 2, 16), (7, 7), (3, 3)),
                                                ((1, 12, 10, 2, 16), (4, 5), (2, 0)), ((1, 8, 8, 1, 16), (4, 4), (0, 0))])
def test_flex_per_query_bias_matches_reference(shape, window, shift):
    # the layout flex uses when the bias needs a gradient (one entry per query and in-window key)
    pytest.importorskip('torch.nn.attention.flex_attention')
    from densekit.ops.window.flex import window_flex
    q, k, v, rpb, _ = make_inputs(shape, (shape[-2], 2 * window[0] - 1, 2 * window[1] - 1))
    with torch.no_grad():
        ref = window_attention(q, k, v, window, shift, rpb=rpb, backend='reference')
        out = window_flex(q, k, v, window, shift, rpb, shape[-1] ** -0.5, expand_bias=True)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


@pytest.mark.gpu
@pytest.mark.parametrize('backend', ['reference', 'triton'])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('shape,window,shift,with_rpb', TRITON_CASES + [((4, 56, 56, 3, 32), 7, 3, True),
                                                                        ((2, 24, 36, 4, 32), 12, 6, True),
                                                                        ((2, 28, 42, 2, 32), 14, 7, True),
                                                                        ((2, 14, 80, 3, 32), (7, 40), 0, False)])
def test_cuda_parity(requires_cuda, backend, dtype, shape, window, shift, with_rpb):
    w = (window, window) if isinstance(window, int) else window
    check_backend(_win_op(window, shift), backend, shape,
                  (shape[-2], 2 * w[0] - 1, 2 * w[1] - 1) if with_rpb else None, dtype, device='cuda')


@pytest.mark.gpu
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_cuda_flex_parity(requires_cuda, dtype):
    check_backend(_win_op(7, 3), 'flex', (4, 56, 56, 3, 32), (3, 13, 13), dtype, device='cuda')


def test_single_row_of_windows_batch_one():
    # One row of windows with batch 1 makes window_partition's output non-contiguous
    # (regression: a .view there raised "view size is not compatible").
    q, k, v = (torch.randn(1, 9, 12, 2, 8) for _ in range(3))
    out = window_attention(q, k, v, (9, 2), backend='reference')
    dense = torch.cat([window_attention(q[:, :, j:j + 2], k[:, :, j:j + 2], v[:, :, j:j + 2],
                                        (9, 2), backend='reference') for j in range(0, 12, 2)], 2)
    torch.testing.assert_close(out, dense)


def test_triton_packed_qkv_views(triton_interpreter):
    """q, k, v as strided views of one packed projection (timm / Swin's qkv.unbind pattern)."""
    g = torch.Generator().manual_seed(3)
    packed = torch.randn(1, 8, 8, 3, 2, 16, generator=g)
    go = torch.randn(1, 8, 8, 2, 16, generator=g)
    grads = {}
    for backend in ('reference', 'triton'):
        x = packed.clone().requires_grad_(True)
        q, k, v = x.unbind(3)
        window_attention(q, k, v, 4, 2, backend=backend).backward(go)
        grads[backend] = x.grad
    torch.testing.assert_close(grads['triton'], grads['reference'], atol=TOL[torch.float32]['dq'], rtol=0)


@pytest.mark.parametrize('shape,window', [
    ((1, 2, 160, 1, 16), (2, 160)),  # a CSWin 2 x 160 stripe: 320 tokens, 10 fp32 chunks
    ((1, 14, 40, 2, 16), (7, 40)),  # CSWin-T stage 3 at 640 px: 280 tokens
])
def test_triton_long_stripes_without_bias(triton_interpreter, shape, window):
    """Windows beyond MAX_TRITON_WINDOW without a bias (CSWin) run on the Triton kernels."""
    from densekit.ops.window import MAX_TRITON_WINDOW
    assert window[0] * window[1] > MAX_TRITON_WINDOW
    check_backend(_win_op(window, 0), 'triton', shape, None, torch.float32)


def test_triton_refuses_long_windows_with_a_bias(monkeypatch):
    monkeypatch.setenv('TRITON_INTERPRET', '1')
    q = torch.randn(1, 2, 160, 1, 16)  # 320 tokens: the bias gradient's dS buffer grows as N^2
    rpb = torch.zeros(1, 3, 319)
    with pytest.raises(RuntimeError, match='more than the 256 the Triton kernels are checked for with a relative '
                                           'position bias'):
        window_attention(q, q, q, (2, 160), rpb=rpb, backend='triton')
    q = torch.randn(1, 1, 4104, 1, 16)
    with pytest.raises(RuntimeError, match='more than the 4096 the Triton kernels are checked for'):
        window_attention(q, q, q, (1, 4104), backend='triton')


def test_reference_tables_cached_in_inference_mode_serve_backward():
    # The reference caches its token permutation and shift mask; a first call under
    # torch.inference_mode() (an eval pass) must not leave inference tensors that a later
    # training step would have to save for backward.
    q, k, v, rpb, go = make_inputs((1, 10, 15, 2, 8), (2, 9, 9))
    with torch.inference_mode():
        expected = window_attention(q, k, v, 5, 2, rpb=rpb, backend='reference')
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    out = window_attention(*leaves, 5, 2, rpb=rpb, backend='reference')
    out.backward(go)
    torch.testing.assert_close(out.detach(), expected, atol=0, rtol=0)
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in leaves)
