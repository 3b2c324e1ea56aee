"""window_extra_attention (windows holding their own extra tokens): brute force against dense
masked attention over all tokens, float64 gradcheck, flex forward on CPU against the reference
(tolerances of the parity harness), the CUDA parity harness for flex, errors."""
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


def _op(P, window_block):
    """The harness's ``op(q, k, v, bias, backend)``; the harness's bias is ``[heads, T, T]``, of
    which the window block is taken when ``window_block``."""
    def op(q, k, v, bias, backend=None):
        b = bias[:, P:, P:] if window_block else bias
        return window_extra_attention(q, k, v, num_extra=P, bias=b, backend=backend)
    return op


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
