"""Neighborhood attention: independent brute-force check of the reference, gradcheck, errors,
dispatch, and backend parity through the harness (Triton via TRITON_INTERPRET on CPU)."""
import logging

import pytest
import torch

from attn_parity import TOL, check_backend, make_inputs, run
from densekit.ops import na1d, na2d
from densekit.ops.neighborhood.reference import na_reference


# ---------------------------------------------------------------- brute force (independent spec)
def _natten_window_start(i, L, k, d):
    """NATTEN 0.14-0.17 ``get_window_start`` (C++), transcribed as a plain loop-free formula."""
    nh = k // 2
    if d <= 1:
        return max(i - nh, 0) + (i + nh >= L) * (L - i - nh - 1)
    if i - nh * d < 0:
        return i % d
    if i + nh * d >= L:
        imodd = i % d
        a = (L // d) * d
        b = L - a
        if imodd < b:
            return L - b + imodd - 2 * nh * d
        return a + imodd - k * d
    return i - nh * d


def _natten_pb_start(i, L, k, d):
    """NATTEN 0.14-0.17 ``get_pb_start``."""
    nh = k // 2
    if d <= 1:
        return nh + (i < nh) * (nh - i) + (i + nh >= L) * (L - i - 1 - nh)
    if i - nh * d < 0:
        return k - 1 - (i // d)
    if i + nh * d >= L:
        return (L - i - 1) // d
    return nh


def brute_force_na(q, k, v, kernel, dilation, rpb, scale):
    """Dense attention with an explicit mask and bias built by a slow Python loop."""
    spatial = q.shape[1:-2]
    n = len(spatial)
    B, h, D = q.shape[0], q.shape[-2], q.shape[-1]
    S = int(torch.tensor(spatial).prod())
    positions = list(torch.cartesian_prod(*[torch.arange(s) for s in spatial]).view(S, n).tolist())
    mask = torch.zeros(S, S, dtype=torch.bool)
    bias = torch.zeros(h, S, S, dtype=q.dtype)
    for qi, pos in enumerate(positions):
        starts = [_natten_window_start(pos[a], spatial[a], kernel[a], dilation[a]) for a in range(n)]
        pbs = [_natten_pb_start(pos[a], spatial[a], kernel[a], dilation[a]) for a in range(n)]
        for offs in torch.cartesian_prod(*[torch.arange(kk) for kk in kernel]).view(-1, n).tolist():
            kpos = [starts[a] + offs[a] * dilation[a] for a in range(n)]
            ki = 0
            for a in range(n):
                ki = ki * spatial[a] + kpos[a]
            assert not mask[qi, ki], 'a key appears twice in one window'
            mask[qi, ki] = True
            if rpb is not None:
                bias[:, qi, ki] = rpb[(slice(None),) + tuple(pbs[a] + offs[a] for a in range(n))]
    qf, kf, vf = (t.reshape(B, S, h, D).transpose(1, 2) for t in (q, k, v))
    logits = (qf @ kf.transpose(-1, -2)) * scale + bias
    logits = logits.masked_fill(~mask, float('-inf'))
    out = logits.softmax(-1) @ vf
    return out.transpose(1, 2).reshape(q.shape)


BRUTE_CASES = [
    # (spatial, kernel, dilation)
    ((11,), (3,), (1,)),
    ((13,), (5,), (2,)),
    ((14,), (3,), (4,)),
    ((7, 9), (3, 5), (1, 1)),
    ((9, 8), (3, 3), (3, 2)),
    ((10, 7), (5, 3), (2, 2)),
    ((6, 13), (5, 3), (1, 4)),
    # the dilated window exactly fits the input (L == k * d) on one or both axes; kernel 1
    ((15,), (5,), (3,)),
    ((12,), (3,), (4,)),
    ((6, 10), (3, 5), (2, 2)),
    ((9, 4), (3, 1), (3, 4)),
]


@pytest.mark.parametrize('spatial,kernel,dilation', BRUTE_CASES)
@pytest.mark.parametrize('with_rpb', [True, False])
@pytest.mark.parametrize('impl', ['tiled', 'offsets'])
def test_reference_matches_brute_force(spatial, kernel, dilation, with_rpb, impl):
    h, D = 2, 4
    shape = (2,) + spatial + (h, D)
    rpb_shape = (h,) + tuple(2 * kk - 1 for kk in kernel) if with_rpb else None
    q, k, v, rpb, go = (t.double() if t is not None else None for t in make_inputs(shape, rpb_shape))
    op = na1d if len(spatial) == 1 else na2d

    def ours(q, k, v, rpb, backend=None):
        if impl == 'offsets':
            return na_reference(q, k, v, kernel, dilation, rpb, D ** -0.5, impl='offsets')
        return op(q, k, v, kernel if len(kernel) > 1 else kernel[0],
                  dilation if len(dilation) > 1 else dilation[0], rpb=rpb, backend=backend)

    def brute(q, k, v, rpb, backend=None):
        return brute_force_na(q, k, v, kernel, dilation, rpb, D ** -0.5)

    expected = run(brute, q, k, v, rpb, go, None, torch.float64)
    actual = run(ours, q, k, v, rpb, go, 'reference', torch.float64)
    for what in expected:
        torch.testing.assert_close(actual[what], expected[what], atol=1e-6, rtol=0, msg=what)


@pytest.mark.parametrize('spatial,kernel,dilation', [((7,), 3, 2), ((5, 6), (3, 3), (1, 2))])
@pytest.mark.parametrize('impl', ['tiled', 'offsets'])
def test_reference_gradcheck(spatial, kernel, dilation, impl):
    h, D = 2, 3
    shape = (1,) + spatial + (h, D)
    n = len(spatial)
    kern = (kernel,) * n if isinstance(kernel, int) else kernel
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    rpb = torch.randn((h,) + tuple(2 * kk - 1 for kk in kern), generator=g, dtype=torch.float64,
                      requires_grad=True)
    kern_t = kern
    dil_t = (dilation,) * n if isinstance(dilation, int) else dilation
    assert torch.autograd.gradcheck(
        lambda q, k, v, rpb: na_reference(q, k, v, kern_t, dil_t, rpb, D ** -0.5, impl=impl), (q, k, v, rpb))


def test_reference_is_exact_attention_when_window_covers_input():
    # kernel == size: every query sees every key -> plain softmax attention (no bias).
    q, k, v, _, _ = make_inputs((2, 5, 7, 2, 8), None)
    out = na2d(q, k, v, (5, 7), backend='reference')
    qf, kf, vf = (t.reshape(2, 35, 2, 8).transpose(1, 2) for t in (q, k, v))
    dense = torch.nn.functional.scaled_dot_product_attention(qf, kf, vf).transpose(1, 2).reshape(q.shape)
    torch.testing.assert_close(out, dense, atol=1e-5, rtol=0)


def test_low_precision_reference_returns_input_dtype():
    q, k, v, _, _ = make_inputs((1, 8, 8, 2, 16), None)
    out = na2d(q.bfloat16(), k.bfloat16(), v.bfloat16(), 3, backend='reference')
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), na2d(q, k, v, 3, backend='reference'), atol=2e-2, rtol=0)


# ---------------------------------------------------------------- errors
def test_errors_name_offending_values():
    q = torch.randn(1, 8, 9, 2, 4)
    with pytest.raises(ValueError, match=r'smaller than the dilated window.*3 \* 3 = 9'):
        na2d(q, q, q, 3, dilation=3)
    with pytest.raises(ValueError, match='odd'):
        na2d(q, q, q, 4)
    with pytest.raises(ValueError, match=r'rpb must have shape \(2, 5, 5\)'):
        na2d(q, q, q, 3, rpb=torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match='same shape'):
        na2d(q, q[:, :7], q, 3)
    with pytest.raises(ValueError, match='4 dims'):
        na1d(q, q, q, 3)


# ---------------------------------------------------------------- dispatch
def test_dispatch_explicit_and_env(monkeypatch, caplog):
    q = torch.randn(1, 7, 7, 1, 4)
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    with pytest.raises(ValueError, match='unknown backend'):
        na2d(q, q, q, 3, backend='cuda_magic')
    with pytest.raises(RuntimeError, match="backend 'triton'.*cannot run"):
        na2d(q, q, q, 3, backend='triton')
    monkeypatch.setenv('DENSEKIT_ATTN_BACKEND', 'triton')
    with pytest.raises(RuntimeError, match='DENSEKIT_ATTN_BACKEND'):
        na2d(q, q, q, 3)
    monkeypatch.setenv('DENSEKIT_ATTN_BACKEND', 'reference')
    na2d(q, q, q, 3)
    monkeypatch.delenv('DENSEKIT_ATTN_BACKEND')
    with caplog.at_level(logging.DEBUG, logger='densekit.ops'):
        na2d(q, q, q, 3)
    assert "skipping backend 'triton'" in caplog.text
    assert "skipping backend 'flex'" in caplog.text
    assert "using backend 'reference'" in caplog.text


# ---------------------------------------------------------------- backend parity (harness)
def _na_op(kernel, dilation, triton_config=None):
    def op(q, k, v, rpb, backend=None):
        fn = na1d if q.dim() == 4 else na2d
        return fn(q, k, v, kernel, dilation, rpb=rpb, backend=backend, triton_config=triton_config)
    return op


# Small on purpose: the Triton interpreter runs every program instance in Python.
TRITON_CASES = [
    # (shape [B, *spatial, h, D], kernel, dilation, with_rpb)
    ((1, 9, 11, 1, 16), 3, 1, True),
    ((1, 13, 10, 1, 16), (5, 3), (2, 3), True),
    ((1, 15, 8, 2, 32), 7, 1, False),
    ((2, 12, 9, 1, 16), (3, 5), (4, 1), True),
    ((1, 14, 13, 1, 64), 13, 1, True),
    ((1, 23, 2, 16), 5, 4, True),
    ((1, 40, 1, 32), 9, 1, True),
    ((1, 6, 10, 1, 24), (3, 5), (2, 2), True),  # dilated window == input on both axes, head_dim 24
]


@pytest.mark.parametrize('shape,kernel,dilation,with_rpb', TRITON_CASES)
def test_triton_parity_fp32(triton_interpreter, shape, kernel, dilation, with_rpb):
    n = len(shape) - 3
    kern = (kernel,) * n if isinstance(kernel, int) else kernel
    rpb_shape = (shape[-2],) + tuple(2 * kk - 1 for kk in kern) if with_rpb else None
    check_backend(_na_op(kernel, dilation), 'triton', shape, rpb_shape, torch.float32)


@pytest.mark.parametrize('variant', ['bias tiles, small tiles', 'per-pair bias'])
@pytest.mark.parametrize('shape,kernel,dilation,with_rpb', TRITON_CASES)
def test_triton_launch_variants_parity_fp32(triton_interpreter, shape, kernel, dilation, with_rpb, variant):
    """The same awkward shapes through the other code paths: the default precomputed bias + mask
    tiles (``bias_tiles.py``) with smaller tiles for dQ and dK/dV, so that several tile types and
    chunks occur along each axis; and the per-pair mask + bias gather (``bias_tiles=False``)."""
    if variant == 'per-pair bias':
        config = dict(bias_tiles=False)
    else:
        config = dict(dq=dict(tile_h=4, tile_w=4, block_n=16), dkdv=dict(tile_h=4, tile_w=8, block_n=32))
    n = len(shape) - 3
    kern = (kernel,) * n if isinstance(kernel, int) else kernel
    rpb_shape = (shape[-2],) + tuple(2 * kk - 1 for kk in kern) if with_rpb else None
    check_backend(_na_op(kernel, dilation, config), 'triton', shape, rpb_shape, torch.float32)


def test_bias_tile_types():
    """Along an axis, interior tiles share one type; the first and last (and a partial one)
    differ; the query regions of key tiles (dK / dV) are typed the same way. Interior tiles are
    typed without being enumerated; that shortcut agrees with enumerating every tile."""
    import itertools
    from densekit.ops.neighborhood.bias_tiles import axis_types
    for L, k, d, tile, transposed in itertools.product((7, 9, 16, 23, 40, 57), (1, 3, 7), (1, 2, 3), (1, 4, 8),
                                                      (False, True)):
        if L >= k * d:
            assert axis_types(L, k, d, tile, transposed) == axis_types(L, k, d, tile, transposed, True)
    types, n_tiles = axis_types(56, 7, 1, 8, False)  # NAT stage 1: 7 tiles of 8
    assert n_tiles == 7 and types.type_of == (0, 1, 1, 1, 1, 1, 2)
    assert types.length == (11, 14, 11)  # key rows of each type's region
    # dilation 4 on 50 rows: 4 classes of 13 / 13 / 12 / 12 rows, 2 tiles each (the last partial)
    types, n_tiles = axis_types(50, 3, 4, 8, True)
    assert n_tiles == 2 and len(types.type_of) == 8
    assert types.type_of[0] == types.type_of[2] and types.type_of[4] == types.type_of[6]
    assert types.type_of[1] != types.type_of[5]  # 5 vs 4 valid rows in the partial tile


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_triton_parity_low_precision(triton_interpreter, dtype):
    shape, kernel, dilation = (1, 10, 9, 2, 32), (5, 3), (2, 1)
    check_backend(_na_op(kernel, dilation), 'triton', shape, (2, 9, 5), dtype)


def test_flex_forward_on_cpu_matches_reference():
    pytest.importorskip('torch.nn.attention.flex_attention')
    q, k, v, rpb, _ = make_inputs((2, 9, 10, 2, 16), (2, 5, 5))
    with torch.no_grad():
        ref = na2d(q, k, v, 3, (2, 3), rpb=rpb, backend='reference')
        out = na2d(q, k, v, 3, (2, 3), rpb=rpb, backend='flex')
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize('shape,kernel,dilation', [((2, 9, 10, 2, 16), (3, 3), (2, 3)),
                                                    ((1, 13, 11, 2, 16), (5, 3), (1, 2)), ((1, 23, 2, 16), (5,), (4,))])
def test_flex_per_query_bias_matches_reference(shape, kernel, dilation):
    # the layout flex uses when the bias needs a gradient (one entry per query and window tap)
    pytest.importorskip('torch.nn.attention.flex_attention')
    from densekit.ops.neighborhood.flex import na_flex
    q, k, v, rpb, _ = make_inputs(shape, (shape[-2],) + tuple(2 * kk - 1 for kk in kernel))
    fn = na2d if len(kernel) == 2 else na1d
    with torch.no_grad():
        ref = fn(q, k, v, kernel, dilation, rpb=rpb, backend='reference')
        out = na_flex(q, k, v, kernel, dilation, rpb, shape[-1] ** -0.5, expand_bias=True)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_flex_refuses_cpu_backward():
    pytest.importorskip('torch.nn.attention.flex_attention')
    q = torch.randn(1, 7, 7, 1, 16, requires_grad=True)
    with pytest.raises(RuntimeError, match='no CPU backward'):
        na2d(q, q, q, 3, backend='flex')


@pytest.mark.gpu
@pytest.mark.parametrize('backend', ['reference', 'triton'])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('shape,kernel,dilation,with_rpb', TRITON_CASES + [
    ((2, 56, 56, 2, 32), 7, 1, True), ((1, 50, 84, 3, 32), 7, 4, True), ((2, 64, 4, 64), 11, 2, True)])
def test_cuda_parity(requires_cuda, backend, dtype, shape, kernel, dilation, with_rpb):
    n = len(shape) - 3
    kern = (kernel,) * n if isinstance(kernel, int) else kernel
    rpb_shape = (shape[-2],) + tuple(2 * kk - 1 for kk in kern) if with_rpb else None
    check_backend(_na_op(kernel, dilation), backend, shape, rpb_shape, dtype, device='cuda')


@pytest.mark.gpu
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
@pytest.mark.parametrize('shape,kernel,dilation', [((2, 56, 56, 2, 32), 7, 1), ((1, 50, 84, 3, 32), 7, 4)])
def test_cuda_triton_per_pair_bias_parity(requires_cuda, dtype, shape, kernel, dilation):
    # the per-pair mask + bias path (bias_tiles=False), which the sweep also times
    check_backend(_na_op(kernel, dilation, dict(bias_tiles=False)), 'triton', shape, (shape[-2], 2 * kernel - 1, 2 * kernel - 1), dtype,
                  device='cuda')


@pytest.mark.gpu
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
@pytest.mark.parametrize('shape,kernel,dilation', [((2, 56, 56, 2, 32), 7, 1), ((1, 50, 84, 3, 32), 7, 4)])
def test_cuda_flex_parity(requires_cuda, dtype, shape, kernel, dilation):
    # flex compiles per shape, so the GPU check runs it on two shapes only
    check_backend(_na_op(kernel, dilation), 'flex', shape, (shape[-2], 2 * kernel - 1, 2 * kernel - 1), dtype,
                  device='cuda')


def test_triton_packed_qkv_views(triton_interpreter):
    """q, k, v as strided views of one packed projection (the usual qkv.unbind pattern)."""
    g = torch.Generator().manual_seed(3)
    packed = torch.randn(1, 9, 10, 3, 2, 16, generator=g)
    rpb = torch.randn(2, 5, 5, generator=g)
    go = torch.randn(1, 9, 10, 2, 16, generator=g)
    res = {}
    for backend in ('reference', 'triton'):
        x = packed.clone().requires_grad_(True)
        r = rpb.clone().requires_grad_(True)
        q, k, v = x.unbind(3)
        na2d(q, k, v, 3, (1, 2), rpb=r, backend=backend).backward(go)
        res[backend] = (x.grad, r.grad)
    torch.testing.assert_close(res['triton'][0], res['reference'][0], atol=TOL[torch.float32]['dq'], rtol=0)
    torch.testing.assert_close(res['triton'][1], res['reference'][1], atol=TOL[torch.float32]['dbias'], rtol=0)


def test_reference_tables_cached_in_inference_mode_serve_backward():
    # The tiled reference caches its index tables; a first call under torch.inference_mode()
    # (an eval pass) must not leave inference tensors that a later training step saves for backward.
    q, k, v, rpb, go = make_inputs((1, 11, 13, 2, 8), (2, 5, 5))
    with torch.inference_mode():
        expected = na2d(q, k, v, 3, (2, 3), rpb=rpb, backend='reference')
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v, rpb)]
    out = na2d(*leaves[:3], 3, (2, 3), rpb=leaves[3], backend='reference')
    out.backward(go)
    torch.testing.assert_close(out.detach(), expected, atol=0, rtol=0)
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in leaves)


def test_triton_launch_config(triton_interpreter):
    """A launch configuration (the argument benchmarks/kernel_sweep.py passes) replaces the launch
    defaults, for every kernel or per kernel; a 1-D problem keeps a one-row strip of the configured
    tile's size; unknown keys are an error. (Under the interpreter fixture: ``@triton.jit`` picks
    compiled or interpreted at import.)"""
    import densekit.ops.neighborhood.triton as T
    default = T._launch(56, 56, 32, torch.bfloat16)
    assert default == (8, 8, 64, 32, 4, 3)
    config = dict(tile_h=16, num_warps=8, num_stages=2)
    assert T._launch(56, 56, 32, torch.bfloat16, config=config) == (16, 8, 64, 32, 8, 2)
    assert T._launch(1, 200, 32, torch.bfloat16, config=config) == (1, 128, 64, 32, 8, 2)
    config = dict(num_warps=8, dkdv=dict(block_n=32, num_warps=4))
    assert T._launch(56, 56, 32, torch.bfloat16, 'fwd', config) == (8, 8, 64, 32, 8, 3)
    assert T._launch(56, 56, 32, torch.bfloat16, 'dq', config) == (8, 8, 64, 32, 8, 3)
    assert T._launch(56, 56, 32, torch.bfloat16, 'dkdv', config) == (8, 8, 32, 32, 4, 3)
    with pytest.raises(ValueError, match="unknown kernel 'bwd'"):
        T._launch(56, 56, 32, torch.bfloat16, 'bwd')
    q = torch.randn(1, 9, 9, 1, 16)
    for bad in (dict(tile=4), dict(dq=dict(warps=8))):
        with pytest.raises(ValueError, match='unknown launch configuration key'):
            na2d(q, q, q, 3, backend='triton', triton_config=bad)


def test_triton_per_kernel_tiles_compute_correctly(triton_interpreter):
    """The three kernels have their own grids: different tiles for fwd, dQ and dK/dV still give
    the reference's output and gradients (interpreter)."""
    config = dict(fwd=dict(tile_h=4, tile_w=8), dq=dict(tile_h=8, tile_w=4, block_n=16),
                  dkdv=dict(tile_h=2, tile_w=16, block_n=32))
    check_backend(_na_op(3, (1, 2), config), 'triton', (1, 11, 13, 2, 16), (2, 5, 5), torch.float32)
