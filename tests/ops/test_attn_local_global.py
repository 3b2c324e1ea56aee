"""local_global_attention: brute force against dense masked attention, float64 gradcheck, flex
forward on CPU against the reference (tolerances of the parity harness), errors."""
import pytest
import torch
from attn_parity import TOL, check_backend_named, tol_scale

from densekit.ops.local_global import local_global_attention


def _dense(q, k, v, ke, ve, kernel, border, rpb, eb, lw, scale):
    """Every query against every map position, with a mask built by explicit loops."""
    B, H, W, h, d = q.shape
    kh, kw = kernel
    P = ke.shape[1]
    N = H * W
    allowed = torch.zeros(N, N, dtype=torch.bool)
    bias = torch.zeros(h, N, N, dtype=q.dtype)
    slot_w = torch.zeros(N, N, dtype=torch.long)
    for y in range(H):
        for x in range(W):
            for sy in range(kh):
                for sx in range(kw):
                    if border == 'mask':
                        ky, kx = y - kh // 2 + sy, x - kw // 2 + sx
                        if not (0 <= ky < H and 0 <= kx < W):
                            continue
                    else:
                        ky = min(max(y - kh // 2, 0), H - kh) + sy
                        kx = min(max(x - kw // 2, 0), W - kw) + sx
                    qi, ki = y * W + x, ky * W + kx
                    allowed[qi, ki] = True
                    slot_w[qi, ki] = sy * kw + sx
                    if rpb is not None:
                        if rpb.shape[1] == kh:
                            bias[:, qi, ki] = rpb[:, sy, sx]
                        else:
                            bias[:, qi, ki] = rpb[:, ky - y + kh - 1, kx - x + kw - 1]
    qf = q.reshape(B, N, h, d).transpose(1, 2) * scale
    kf = k.reshape(B, N, h, d).transpose(1, 2)
    vf = v.reshape(B, N, h, d).transpose(1, 2)
    s_loc = (qf @ kf.transpose(-1, -2) + bias).masked_fill(~allowed, float('-inf'))
    s_ext = qf @ ke.permute(0, 2, 3, 1)
    if eb is not None:
        s_ext = s_ext + (eb[:, None] if eb.dim() == 2 else eb.reshape(h, N, P))
    p = torch.cat([s_loc, s_ext], -1).softmax(-1)
    p_loc, p_ext = p.split([N, P], -1)
    if lw is not None:
        lwf = lw.reshape(B, N, h, kh * kw).permute(0, 2, 1, 3)  # [B, h, N, kk]
        dense_lw = torch.gather(lwf, 3, slot_w.expand(B, h, N, N)) * allowed
        p_loc = p_loc + dense_lw
    out = p_loc @ vf + p_ext @ ve.transpose(1, 2)
    return out.transpose(1, 2).reshape(B, H, W, h, d)


def _inputs(shape, P, kernel, rpb_kind, eb_kind, lw, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    B, H, W, h, d = shape
    kh, kw = kernel
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).to(dtype)  # noqa: E731
    q, k, v = r(*shape), r(*shape), r(*shape)
    ke, ve = r(B, P, h, d), r(B, P, h, d)
    rpb = {None: None, 'slot': r(h, kh, kw), 'offset': r(h, 2 * kh - 1, 2 * kw - 1)}[rpb_kind]
    eb = {None: None, 'head': r(h, P), 'query': r(h, H, W, P)}[eb_kind]
    lwt = r(B, H, W, h, kh * kw) if lw else None
    return q, k, v, ke, ve, rpb, eb, lwt


CASES = [
    # shape [B, H, W, heads, d], P, kernel, border, rpb, extra bias, local weights
    ((2, 5, 7, 2, 4), 6, (3, 3), 'mask', 'slot', 'query', True),
    ((1, 4, 9, 3, 5), 3, (3, 5), 'mask', 'offset', 'head', False),
    ((1, 6, 5, 1, 3), 4, (5, 3), 'clamp', 'offset', 'query', True),
    ((2, 3, 3, 2, 2), 1, (3, 3), 'clamp', 'slot', None, True),
    ((1, 2, 3, 1, 4), 2, (5, 5), 'mask', None, None, False),  # window larger than the map
]


@pytest.mark.parametrize('shape,P,kernel,border,rpb_kind,eb_kind,lw', CASES)
def test_matches_dense_masked_attention(shape, P, kernel, border, rpb_kind, eb_kind, lw):
    q, k, v, ke, ve, rpb, eb, lwt = _inputs(shape, P, kernel, rpb_kind, eb_kind, lw, torch.float64)
    scale = 0.7
    out = local_global_attention(q, k, v, ke, ve, kernel, border=border, rpb=rpb, extra_bias=eb,
                                 local_weights=lwt, scale=scale, backend='reference')
    exp = _dense(q, k, v, ke, ve, kernel, border, rpb, eb, lwt, scale)
    torch.testing.assert_close(out, exp, atol=1e-12, rtol=0)


@pytest.mark.parametrize('border', ['mask', 'clamp'])
def test_gradcheck_float64(border):
    q, k, v, ke, ve, rpb, eb, lwt = _inputs((1, 3, 4, 2, 2), 2, (3, 3), 'slot' if border == 'mask' else 'offset',
                                            'query', True, torch.float64, seed=1)
    leaves = [t.requires_grad_(True) for t in (q, k, v, ke, ve, rpb, eb, lwt)]

    def f(*t):
        return local_global_attention(*t[:5], (3, 3), border=border, rpb=t[5], extra_bias=t[6],
                                      local_weights=t[7], scale=0.9)

    assert torch.autograd.gradcheck(f, leaves, fast_mode=True)


def test_no_extra_bias_per_head_equals_expanded():
    q, k, v, ke, ve, rpb, eb, _ = _inputs((1, 3, 4, 2, 4), 5, (3, 3), 'slot', 'head', False)
    a = local_global_attention(q, k, v, ke, ve, 3, rpb=rpb, extra_bias=eb, scale=1.0)
    b = local_global_attention(q, k, v, ke, ve, 3, rpb=rpb, extra_bias=eb[:, None, None].expand(2, 3, 4, 5),
                               scale=1.0)
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_errors():
    q, k, v, ke, ve, *_ = _inputs((1, 3, 4, 2, 4), 5, (3, 3), None, None, False)
    with pytest.raises(ValueError, match='border'):
        local_global_attention(q, k, v, ke, ve, 3, border='zeros')
    with pytest.raises(ValueError, match='odd'):
        local_global_attention(q, k, v, ke, ve, 2)
    with pytest.raises(ValueError, match='clamp'):
        local_global_attention(q, k, v, ke, ve, 5, border='clamp')
    with pytest.raises(ValueError, match='rpb'):
        local_global_attention(q, k, v, ke, ve, 3, rpb=torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match='extra_bias'):
        local_global_attention(q, k, v, ke, ve, 3, extra_bias=torch.zeros(2, 4))
    with pytest.raises(ValueError, match='k_extra'):
        local_global_attention(q, k, v, ke[..., :2], ve, 3)
    with pytest.raises(ValueError, match='unknown backend'):
        local_global_attention(q, k, v, ke, ve, 3, backend='cuda')


@pytest.mark.parametrize('shape,P,kernel,border,rpb_kind,eb_kind,lw', [
    ((1, 5, 7, 2, 16), 6, (3, 3), 'mask', 'slot', 'query', True),
    ((2, 4, 9, 1, 16), 3, (3, 5), 'clamp', 'offset', 'head', True),
    ((1, 6, 5, 2, 16), 4, (5, 3), 'mask', None, None, False),
])
def test_flex_forward_on_cpu_matches_reference(shape, P, kernel, border, rpb_kind, eb_kind, lw):
    pytest.importorskip('torch.nn.attention.flex_attention')
    q, k, v, ke, ve, rpb, eb, lwt = _inputs(shape, P, kernel, rpb_kind, eb_kind, lw)
    kwargs = dict(border=border, rpb=rpb, extra_bias=eb, local_weights=lwt, scale=0.5)
    with torch.no_grad():
        exp = local_global_attention(q, k, v, ke, ve, kernel, backend='reference', **kwargs)
        out = local_global_attention(q, k, v, ke, ve, kernel, backend='flex', **kwargs)
    torch.testing.assert_close(out, exp, atol=TOL[torch.float32]['out'] * tol_scale(exp), rtol=0)


def test_flex_refused_on_cpu_with_grad_and_not_chosen_automatically():
    pytest.importorskip('torch.nn.attention.flex_attention')
    q, k, v, ke, ve, *_ = _inputs((1, 3, 4, 1, 16), 2, (3, 3), None, None, False)
    with torch.no_grad():
        torch.testing.assert_close(local_global_attention(q, k, v, ke, ve, 3),
                                   local_global_attention(q, k, v, ke, ve, 3, backend='reference'), atol=0, rtol=0)
    with pytest.raises(RuntimeError, match='backward'):
        local_global_attention(q.requires_grad_(True), k, v, ke, ve, 3, backend='flex')


# --- Triton backend: parity with the reference through the shared harness ------------------------

# gradient name -> the TOL entry of the quantity it plays the role of: the extra keys / values sum
# over every query of the image (as dK / dV over the window's queries), the biases over queries and
# the batch; d local_weights is dO . V per query and slot (a dP, whose error is dQ-like)
ALIASES = {'dk_extra': 'dk', 'dv_extra': 'dv', 'drpb': 'dbias', 'dextra_bias': 'dbias', 'dlocal_weights': 'dq'}


def _op(kernel, border, scale=0.6, config=None):
    def op(q, k, v, k_extra, v_extra, rpb=None, extra_bias=None, local_weights=None, backend=None):
        return local_global_attention(q, k, v, k_extra, v_extra, kernel, border=border, rpb=rpb,
                                      extra_bias=extra_bias, local_weights=local_weights, scale=scale,
                                      backend=backend, triton_config=config if backend == 'triton' else None)
    return op


def _check_triton(shape, P, kernel, border, rpb_kind, eb_kind, lw, dtype, device='cpu', backend='triton',
                  config=None, seed=0):
    names = ('q', 'k', 'v', 'k_extra', 'v_extra', 'rpb', 'extra_bias', 'local_weights')
    tensors = _inputs(shape, P, kernel, rpb_kind, eb_kind, lw, seed=seed)
    inputs = {n: t for n, t in zip(names, tensors) if t is not None}
    go = torch.randn(shape, generator=torch.Generator().manual_seed(seed + 1))
    check_backend_named(_op(kernel, border, config=config), backend, inputs, go, dtype, ALIASES, device=device)


TRITON_CASES = [
    # shape [B, H, W, heads, d], P, kernel, border, rpb, extra bias, local weights: odd maps, a map
    # smaller than the masked window, P = 0 and P not a power of two (and > one 32-token chunk),
    # head dims that are not powers of two, both borders, every bias form
    ((2, 3, 5, 1, 16), 6, (3, 3), 'mask', 'slot', 'query', True),
    ((1, 4, 5, 1, 12), 37, (3, 5), 'clamp', 'offset', 'head', True),
    ((1, 2, 3, 2, 16), 0, (5, 5), 'mask', 'offset', None, False),
    ((1, 5, 3, 1, 24), 3, (5, 3), 'clamp', 'slot', 'query', False),
]


@pytest.mark.parametrize('shape,P,kernel,border,rpb_kind,eb_kind,lw', TRITON_CASES)
def test_triton_parity_fp32(triton_interpreter, shape, P, kernel, border, rpb_kind, eb_kind, lw):
    _check_triton(shape, P, kernel, border, rpb_kind, eb_kind, lw, torch.float32)


@pytest.mark.parametrize('dtype,case', [(torch.float16, TRITON_CASES[0]), (torch.bfloat16, TRITON_CASES[1])])
def test_triton_parity_low_precision(triton_interpreter, dtype, case):
    _check_triton(*case, dtype)


TRITON_SLOW_CASES = [
    ((2, 9, 11, 3, 24), 49, (3, 3), 'mask', 'offset', 'query', True),  # TransNeXt-like: 3 heads x 24, 7x7 pool
    ((1, 3, 4, 2, 16), 5, (7, 7), 'mask', 'slot', 'head', True),  # window larger than the map both ways
    ((2, 8, 7, 2, 20), 70, (5, 5), 'clamp', 'offset', 'query', True),  # three extra chunks
    ((1, 7, 9, 2, 16), 0, (3, 5), 'clamp', None, None, True),
    ((1, 1, 9, 1, 16), 2, (1, 3), 'mask', 'offset', 'head', False),  # one row, a 1 x 3 window
]


@pytest.mark.slow
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('shape,P,kernel,border,rpb_kind,eb_kind,lw', TRITON_SLOW_CASES + TRITON_CASES)
def test_triton_parity_sweep(triton_interpreter, shape, P, kernel, border, rpb_kind, eb_kind, lw, dtype):
    _check_triton(shape, P, kernel, border, rpb_kind, eb_kind, lw, dtype)


def test_triton_launch_configuration(triton_interpreter):
    """Other blockings (several query runs per extra-token gradient program, 16-row blocks) give
    the same result; an unknown key is an error naming it."""
    _check_triton((1, 4, 5, 1, 16), 20, (3, 3), 'mask', 'slot', 'head', True, torch.float32,
                  config={'block_m': 16, 'block_n': 16, 'block_p': 16, 'queries_per_program': 16})
    q, k, v, ke, ve, *_ = _inputs((1, 3, 4, 1, 16), 2, (3, 3), None, None, False)
    with pytest.raises(ValueError, match='block_q'):
        local_global_attention(q, k, v, ke, ve, 3, backend='triton', triton_config={'block_q': 16})


def test_triton_not_chosen_automatically_on_cpu(triton_interpreter):
    q, k, v, ke, ve, *_ = _inputs((1, 3, 4, 1, 16), 2, (3, 3), None, None, False)
    q.requires_grad_(True)
    out = local_global_attention(q, k, v, ke, ve, 3)  # flex refuses a CPU backward: the reference
    exp = local_global_attention(q, k, v, ke, ve, 3, backend='reference')
    torch.testing.assert_close(out, exp, atol=0, rtol=0)


def test_triton_double_backward_is_an_error(triton_interpreter):
    q, k, v, ke, ve, *_ = _inputs((1, 3, 4, 1, 16), 2, (3, 3), None, None, False)
    q.requires_grad_(True)
    out = local_global_attention(q, k, v, ke, ve, 3, backend='triton')
    (g,) = torch.autograd.grad(out.sum(), q, create_graph=True)
    with pytest.raises(RuntimeError, match='once_differentiable|does not require grad'):
        g.sum().backward()


@pytest.mark.gpu
@pytest.mark.parametrize('backend', ['triton', 'flex'])
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
@pytest.mark.parametrize('shape,P,kernel,border,rpb_kind,eb_kind,lw', [
    # TransNeXt-T stage 1 at 800x1333 (200x334 map, 3 heads x 24, 3x3 window, per-query pool
    # bias), at batch 1 and a reduced pool; a clamped 7x7 case with 2 chunks of extra tokens
    ((1, 200, 334, 3, 24), 49, (3, 3), 'mask', 'slot', 'query', True),
    ((2, 50, 84, 6, 32), 100, (3, 3), 'mask', 'offset', 'head', True),
    ((1, 37, 45, 4, 32), 70, (7, 7), 'clamp', 'offset', 'query', False),
])
def test_cuda_parity(requires_cuda, backend, dtype, shape, P, kernel, border, rpb_kind, eb_kind, lw):
    _check_triton(shape, P, kernel, border, rpb_kind, eb_kind, lw, dtype, device='cuda', backend=backend)


@pytest.mark.slow
def test_triton_packed_qkv_views(triton_interpreter):
    """q, k, v as views of one packed projection (strided, read in place; their gradients written
    with the packed layout) and k_extra / v_extra views of one pooled projection."""
    g = torch.Generator().manual_seed(3)
    B, H, W, h, d, P = 1, 4, 5, 2, 16, 7
    qkv = torch.randn(B, H, W, 3, h, d, generator=g, requires_grad=True)
    kv_e = torch.randn(B, P, 2, h, d, generator=g, requires_grad=True)
    lw = torch.randn(B, H, W, h, 9, generator=g)
    go = torch.randn(B, H, W, h, d, generator=g)
    res = {}
    for backend in ('reference', 'triton'):
        qkv.grad = kv_e.grad = None
        out = local_global_attention(*qkv.unbind(3), *kv_e.unbind(2), 3, local_weights=lw, backend=backend)
        out.backward(go)
        res[backend] = (out.detach(), qkv.grad.clone(), kv_e.grad.clone())
    for what, a, e in zip(('out', 'dq', 'dk'), res['triton'], res['reference']):
        torch.testing.assert_close(a, e, atol=TOL[torch.float32][what] * tol_scale(e), rtol=0)
