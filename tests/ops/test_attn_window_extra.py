"""window_extra_attention (windows holding their own extra tokens): brute force against dense
masked attention over all tokens, float64 gradcheck, flex forward on CPU against the reference
(tolerances of the parity harness), the Triton kernels against the reference through the parity
harness (interpreter; fp32 / fp16 / bf16, output and every gradient), the CUDA parity harness for
Triton and flex, errors."""
import pytest
import torch
from attn_parity import TOL, check_backend, tol_scale

from densekit.ops.window_extra import window_extra_attention


def _inputs(B, nW, T, heads, d, bias_side, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, nW, T, heads, d, generator=g, dtype=dtype) for _ in range(3))
    bias = torch.randn(heads, bias_side, bias_side, generator=g, dtype=dtype) if bias_side else None
    return q, k, v, bias


def _dense(q, k, v, P, bias, scale):
    """All tokens of all windows in one sequence; a key is allowed when it is in the query's window,
    the bias looked up by explicit loops over the pairs of window tokens (none with an extra token
    when ``bias`` is the window block)."""
    B, nW, T, h, d = q.shape
    allowed = torch.zeros(nW * T, nW * T, dtype=torch.bool)
    full_bias = torch.zeros(h, nW * T, nW * T, dtype=q.dtype)
    off = 0 if bias is None or bias.shape[-1] == T else P
    for w in range(nW):
        for i in range(T):
            for j in range(T):
                allowed[w * T + i, w * T + j] = True
                if bias is not None and i >= off and j >= off:
                    full_bias[:, w * T + i, w * T + j] = bias[:, i - off, j - off]
    qs, ks, vs = (t.reshape(B, nW * T, h, d) for t in (q, k, v))
    logits = torch.einsum('bqnd,bknd->bnqk', qs, ks) * scale + full_bias
    logits = logits.masked_fill(~allowed, float('-inf'))
    return torch.einsum('bnqk,bknd->bqnd', logits.softmax(-1), vs).reshape(B, nW, T, h, d)


@pytest.mark.parametrize('B,nW,T,P,heads,d,bias_side', [
    (2, 3, 13, 4, 2, 8, 9),    # FasterViT's layout: 4 carrier tokens, bias on the 3x3 window block
    (1, 5, 5, 1, 1, 3, 5),     # a bias over all pairs
    (1, 2, 6, 0, 3, 4, 6),     # no extra tokens: plain window attention
    (2, 1, 7, 3, 1, 5, None),  # one window: full attention
])
def test_matches_dense_masked_attention(B, nW, T, P, heads, d, bias_side):
    q, k, v, bias = _inputs(B, nW, T, heads, d, bias_side)
    out = window_extra_attention(q, k, v, num_extra=P, bias=bias, scale=0.7)
    assert out.shape == q.shape
    torch.testing.assert_close(out, _dense(q, k, v, P, bias, 0.7), atol=1e-5, rtol=0)


def test_default_scale_and_windows_are_independent():
    q, k, v, bias = _inputs(1, 3, 6, 2, 4, 4)
    out = window_extra_attention(q, k, v, num_extra=2, bias=bias)
    torch.testing.assert_close(out, _dense(q, k, v, 2, bias, 4 ** -0.5), atol=1e-5, rtol=0)
    k2 = k.clone()
    k2[:, 1, 0] += 1.0  # window 1's first extra key
    out2 = window_extra_attention(q, k2, v, num_extra=2, bias=bias)
    assert torch.equal(out2[:, [0, 2]], out[:, [0, 2]]) and not torch.allclose(out2[:, 1], out[:, 1])


@pytest.mark.parametrize('bias_side', [3, 5])
def test_gradcheck_float64(bias_side):
    q, k, v, bias = _inputs(1, 2, 5, 2, 2, bias_side, torch.float64, seed=1)
    leaves = [t.requires_grad_(True) for t in (q, k, v, bias)]

    def f(*t):
        return window_extra_attention(*t[:3], num_extra=2, bias=t[3], scale=0.9)

    assert torch.autograd.gradcheck(f, leaves, fast_mode=True)


@pytest.mark.parametrize('B,nW,T,P,heads,d,bias_side', [
    (1, 3, 13, 4, 2, 16, 9),
    (2, 2, 5, 0, 1, 16, None),
])
def test_flex_forward_on_cpu_matches_reference(B, nW, T, P, heads, d, bias_side):
    pytest.importorskip('torch.nn.attention.flex_attention')
    q, k, v, bias = _inputs(B, nW, T, heads, d, bias_side)
    with torch.no_grad():
        exp = window_extra_attention(q, k, v, num_extra=P, bias=bias, scale=0.5, backend='reference')
        got = window_extra_attention(q, k, v, num_extra=P, bias=bias, scale=0.5, backend='flex')
    torch.testing.assert_close(got, exp, atol=TOL[torch.float32]['out'] * tol_scale(exp), rtol=0)


def test_flex_refused_on_cpu_with_grad_and_not_chosen_automatically():
    pytest.importorskip('torch.nn.attention.flex_attention')
    q, k, v, _ = _inputs(1, 2, 6, 1, 16, None)
    with torch.no_grad():
        torch.testing.assert_close(window_extra_attention(q, k, v, num_extra=2),
                                   window_extra_attention(q, k, v, num_extra=2, backend='reference'), atol=0, rtol=0)
    with pytest.raises(RuntimeError, match='backward'):
        window_extra_attention(q.requires_grad_(True), k, v, num_extra=2, backend='flex')


def _op(P, window_block, triton_config=None):
    """The harness's ``op(q, k, v, bias, backend)``; the harness's bias is ``[heads, T, T]``, of
    which the window block is taken when ``window_block`` (a strided view: the kernels read it in
    place)."""
    def op(q, k, v, bias, backend=None):
        b = bias[:, P:, P:] if window_block and bias is not None else bias
        return window_extra_attention(q, k, v, num_extra=P, bias=b, backend=backend, triton_config=triton_config)
    return op


def _bias_shape(shape, window_block):
    """The harness's bias shape (``[heads, T, T]``) or None when ``window_block`` is None."""
    return None if window_block is None else (shape[-2], shape[2], shape[2])


# (shape [B, nW, T, heads, d], P, window_block: True = [heads, N, N], False = [heads, T, T], None =
# no bias). fp32 takes 32-token chunks, so T > 32 runs the several-chunk path (separate dQ kernel,
# dS read-add-write); half precision takes FasterViT's 53 tokens in one chunk.
TRITON_CASES = [
    ((1, 1, 53, 1, 16), 4, True),     # FasterViT stage 2: 4 carrier + 7x7 tokens, window-block bias
    ((2, 3, 6, 1, 24), 1, False),     # P = 1, a bias over all pairs, head_dim 24
    ((2, 2, 9, 2, 16), 0, False),     # no extra tokens: plain window attention
    ((1, 3, 12, 1, 16), 3, None),     # P = 3, no bias
]


@pytest.mark.parametrize('shape,P,window_block', TRITON_CASES)
def test_triton_parity_fp32(triton_interpreter, shape, P, window_block):
    check_backend(_op(P, window_block), 'triton', shape, _bias_shape(shape, window_block), torch.float32)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_triton_parity_low_precision(triton_interpreter, dtype):
    shape = (1, 1, 53, 2, 32)  # one chunk of 64 tokens in half precision
    check_backend(_op(4, True), 'triton', shape, _bias_shape(shape, True), dtype)


def test_triton_bias_gradient_summed_over_window_groups(triton_interpreter):
    """The bias is shared by every window of every image: each dK / dV program sums dS over a group
    of windows. Force a group of several windows with windows of two 16-token chunks, so the
    several-chunk read-add-write path is taken."""
    import densekit.ops.window_extra.triton as wt
    config = dict(block=16, min_programs=2)
    # 1 image x 3 windows, 2 chunks x 1 head = 2 programs per window: one group of 3 windows (the
    # image / window split of a window's index is also taken by the cases with several images)
    assert wt._tiling(20, 16, torch.float32, config)[:2] == (16, 2)
    assert wt.window_groups(3, 2, config) == (1, 3)
    shape = (1, 3, 20, 1, 16)
    check_backend(_op(5, True, config), 'triton', shape, _bias_shape(shape, True), torch.float32)


def test_triton_packed_qkv_views(triton_interpreter):
    """q, k, v as strided views of one packed projection (FasterViT's ``qkv(x).view(..).unbind``)."""
    g = torch.Generator().manual_seed(3)
    packed = torch.randn(1, 2, 7, 3, 2, 16, generator=g)
    bias = torch.randn(2, 5, 5, generator=g)
    go = torch.randn(1, 2, 7, 2, 16, generator=g)
    grads = {}
    for backend in ('reference', 'triton'):
        x, b = packed.clone().requires_grad_(True), bias.clone().requires_grad_(True)
        q, k, v = x.unbind(3)
        window_extra_attention(q, k, v, num_extra=2, bias=b, backend=backend).backward(go)
        grads[backend] = (x.grad, b.grad)
    for got, exp, what in zip(grads['triton'], grads['reference'], ('dq', 'dbias')):
        torch.testing.assert_close(got, exp, atol=TOL[torch.float32][what] * tol_scale(exp), rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('shape,P,window_block', TRITON_CASES + [
    ((2, 4, 53, 2, 20), 4, True),     # several windows and images, head_dim 20
    ((1, 2, 49, 2, 32), 0, True),     # FasterViT stage 3: no carrier tokens, 7x7 bias
    ((1, 1, 80, 1, 16), 64, True),    # carrier-token attention: one window, bias on the last 16
    ((2, 3, 70, 1, 32), 6, False),    # P = 6, full bias, several chunks in half precision too
    ((1, 2, 1, 1, 16), 1, None),      # a window of one extra token
])
def test_triton_parity_sweep(triton_interpreter, dtype, shape, P, window_block):
    check_backend(_op(P, window_block), 'triton', shape, _bias_shape(shape, window_block), dtype)


def test_triton_dispatch_and_refusals(monkeypatch):
    """Triton on CPU only by name (under the interpreter), never automatically; windows past the
    checked sizes and unknown launch-configuration keys are refused with the reason."""
    monkeypatch.setenv('TRITON_INTERPRET', '1')
    q, k, v, bias = _inputs(1, 2, 6, 1, 16, 4)
    with torch.no_grad():
        torch.testing.assert_close(window_extra_attention(q, k, v, num_extra=2, bias=bias),
                                   window_extra_attention(q, k, v, num_extra=2, bias=bias, backend='reference'),
                                   atol=0, rtol=0)
    with pytest.raises(ValueError, match="unknown launch configuration keys \\['blocks'\\]"):
        window_extra_attention(q, k, v, num_extra=2, bias=bias, backend='triton', triton_config={'blocks': 16})
    with pytest.raises(RuntimeError, match='empty input'):
        window_extra_attention(q[:0], k[:0], v[:0], num_extra=2, bias=bias, backend='triton')
    q = torch.randn(1, 1, 1025, 1, 16)
    with pytest.raises(RuntimeError, match='1025 tokens, more than the 1024 the Triton kernels are checked for '
                                           'with a bias'):
        window_extra_attention(q, q, q, bias=torch.zeros(1, 1025, 1025), backend='triton')
    monkeypatch.delenv('TRITON_INTERPRET')
    with pytest.raises(RuntimeError, match='TRITON_INTERPRET=1'):
        window_extra_attention(q, q, q, backend='triton')


# FasterViT's calls at 800x1333 (as the backbone makes them, batch 2): stage 2 (96 windows of 4
# carrier + 7x7 tokens), stage 3 (24 windows of 7x7 tokens, no carriers) and the carrier-token
# attention (one window of 384 tokens, bias on the last 16), FasterViT-2's head_dim 48 and
# FasterViT-4's 49.
FASTERVIT_GPU_CASES = [
    ((2, 96, 53, 8, 48), 4, True),
    ((2, 24, 49, 16, 48), 0, True),
    ((2, 1, 384, 8, 48), 368, True),
    ((1, 96, 53, 16, 49), 4, True),
]


@pytest.mark.gpu
@pytest.mark.parametrize('backend', ['reference', 'triton'])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('shape,P,window_block', TRITON_CASES + FASTERVIT_GPU_CASES + [((3, 5, 70, 2, 32), 6, False)])
def test_cuda_parity(requires_cuda, backend, dtype, shape, P, window_block):
    check_backend(_op(P, window_block), backend, shape, _bias_shape(shape, window_block), dtype, device='cuda')


@pytest.mark.gpu
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('shape,P,window_block', [
    ((2, 96, 53, 8, 32), 4, True),    # FasterViT-2 stage 2 at 800x1333 (carriers, window bias)
    ((1, 7, 49, 2, 16), 0, False),
    ((3, 1, 24, 4, 64), 8, True),     # carrier-token global attention (bias on the last 16)
])
def test_cuda_flex_parity(requires_cuda, dtype, shape, P, window_block):
    check_backend(_op(P, window_block), 'flex', shape, (shape[-2], shape[2], shape[2]), dtype, device='cuda')


def test_errors():
    q, k, v, bias = _inputs(1, 2, 6, 2, 4, 4)
    with pytest.raises(ValueError, match='same shape'):
        window_extra_attention(q, k[:, :1], v)
    with pytest.raises(ValueError, match='num_extra'):
        window_extra_attention(q, k, v, num_extra=7)
    with pytest.raises(ValueError, match='bias'):
        window_extra_attention(q, k, v, num_extra=2, bias=bias[:, :3, :3])
    with pytest.raises(ValueError, match='expected q'):
        window_extra_attention(q[0], k[0], v[0])
    with pytest.raises(ValueError, match='unknown backend'):
        window_extra_attention(q, k, v, backend='cuda')


def test_public_paths():
    """The op's own package, ``densekit.ops`` and the re-export of ``densekit.ops.local_global``
    (its former home) are one function."""
    import densekit.ops
    from densekit.ops.local_global import window_extra_attention as from_local_global
    assert from_local_global is window_extra_attention and densekit.ops.window_extra_attention is window_extra_attention
