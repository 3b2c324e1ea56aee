"""window_extra_attention (windows joined with per-window extra tokens): brute force against dense
masked attention over all tokens, float64 gradcheck, flex forward on CPU against the reference
(tolerances of the parity harness), the CUDA parity harness for flex, errors."""
import pytest
import torch
from attn_parity import TOL, check_backend, tol_scale

from densekit.ops.local_global import window_extra_attention


def _inputs(B, nW, N, P, heads, d, with_bias, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    win = [torch.randn(B, nW, N, heads, d, generator=g, dtype=dtype) for _ in range(3)]
    extra = [torch.randn(B, nW, P, heads, d, generator=g, dtype=dtype) for _ in range(3)]
    bias = torch.randn(heads, P + N, P + N, generator=g, dtype=dtype) if with_bias else None
    return win, extra, bias


def _dense(win, extra, bias, scale):
    """All tokens of all windows in one sequence; a key is allowed when it is in the query's window
    (built by explicit loops), the bias looked up by the tokens' positions in their windows."""
    q, k, v = win
    qe, ke, ve = extra
    B, nW, N, h, d = q.shape
    P = qe.shape[2]
    T = P + N
    seqs = [torch.cat([e, t], 2).reshape(B, nW * T, h, d) for e, t in zip(extra, win)]
    allowed = torch.zeros(nW * T, nW * T, dtype=torch.bool)
    full_bias = torch.zeros(h, nW * T, nW * T, dtype=q.dtype)
    for w in range(nW):
        for i in range(T):
            for j in range(T):
                allowed[w * T + i, w * T + j] = True
                if bias is not None:
                    full_bias[:, w * T + i, w * T + j] = bias[:, i, j]
    logits = torch.einsum('bqnd,bknd->bnqk', seqs[0], seqs[1]) * scale + full_bias
    logits = logits.masked_fill(~allowed, float('-inf'))
    out = torch.einsum('bnqk,bknd->bqnd', logits.softmax(-1), seqs[2]).reshape(B, nW, T, h, d)
    return out[:, :, P:], out[:, :, :P]


@pytest.mark.parametrize('B,nW,N,P,heads,d,with_bias', [
    (2, 3, 9, 4, 2, 8, True),   # FasterViT's layout (4 carrier tokens per window)
    (1, 5, 4, 1, 1, 3, False),
    (1, 2, 6, 0, 3, 4, True),   # no extra tokens: plain window attention
    (2, 1, 7, 3, 1, 5, True),   # one window: full attention
])
def test_matches_dense_masked_attention(B, nW, N, P, heads, d, with_bias):
    win, extra, bias = _inputs(B, nW, N, P, heads, d, with_bias)
    out, out_extra = window_extra_attention(*win, *extra, bias=bias, scale=0.7)
    exp, exp_extra = _dense(win, extra, bias, 0.7)
    assert out.shape == win[0].shape and out_extra.shape == extra[0].shape
    torch.testing.assert_close(out, exp, atol=1e-5, rtol=0)
    torch.testing.assert_close(out_extra, exp_extra, atol=1e-5, rtol=0)


def test_default_scale_and_per_window_extras_matter():
    win, extra, bias = _inputs(1, 3, 4, 2, 2, 4, True)
    out, _ = window_extra_attention(*win, *extra, bias=bias)
    torch.testing.assert_close(out, _dense(win, extra, bias, 4 ** -0.5)[0], atol=1e-5, rtol=0)
    # Changing window 1's extra keys changes window 1 only.
    extra2 = [extra[0], extra[1].clone(), extra[2]]
    extra2[1][:, 1] += 1.0
    out2, _ = window_extra_attention(*win, *extra2, bias=bias)
    assert torch.equal(out2[:, [0, 2]], out[:, [0, 2]]) and not torch.allclose(out2[:, 1], out[:, 1])


def test_gradcheck_float64():
    win, extra, bias = _inputs(1, 2, 3, 2, 2, 2, True, torch.float64, seed=1)
    leaves = [t.requires_grad_(True) for t in (*win, *extra, bias)]

    def f(*t):
        return window_extra_attention(*t[:6], bias=t[6], scale=0.9)

    assert torch.autograd.gradcheck(f, leaves, fast_mode=True)


@pytest.mark.parametrize('B,nW,N,P,heads,d,with_bias', [
    (1, 3, 9, 4, 2, 16, True),
    (2, 2, 5, 0, 1, 16, False),
])
def test_flex_forward_on_cpu_matches_reference(B, nW, N, P, heads, d, with_bias):
    pytest.importorskip('torch.nn.attention.flex_attention')
    win, extra, bias = _inputs(B, nW, N, P, heads, d, with_bias)
    with torch.no_grad():
        exp = window_extra_attention(*win, *extra, bias=bias, scale=0.5, backend='reference')
        got = window_extra_attention(*win, *extra, bias=bias, scale=0.5, backend='flex')
    for a, e in zip(got, exp):
        torch.testing.assert_close(a, e, atol=TOL[torch.float32]['out'] * tol_scale(e), rtol=0)


def test_flex_refused_on_cpu_with_grad_and_not_chosen_automatically():
    pytest.importorskip('torch.nn.attention.flex_attention')
    win, extra, _ = _inputs(1, 2, 4, 2, 1, 16, False)
    with torch.no_grad():
        for a, e in zip(window_extra_attention(*win, *extra),
                        window_extra_attention(*win, *extra, backend='reference')):
            torch.testing.assert_close(a, e, atol=0, rtol=0)
    with pytest.raises(RuntimeError, match='backward'):
        window_extra_attention(win[0].requires_grad_(True), *win[1:], *extra, backend='flex')


def _joint_op(P):
    """The harness's ``op(q, k, v, bias, backend)`` on joint ``[B, nW, P + N, heads, d]`` tokens:
    the first ``P`` of every window are the extra tokens."""
    def op(q, k, v, bias, backend=None):
        parts = [(t[:, :, P:], t[:, :, :P]) for t in (q, k, v)]
        out, out_extra = window_extra_attention(parts[0][0], parts[1][0], parts[2][0], parts[0][1],
                                                parts[1][1], parts[2][1], bias=bias, backend=backend)
        return torch.cat([out_extra, out], dim=2)
    return op


@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('shape,P', [((2, 96, 53, 8, 32), 4), ((1, 7, 49, 2, 16), 0), ((3, 1, 24, 4, 64), 0)])
def test_cuda_flex_parity(requires_cuda, dtype, shape, P):
    check_backend(_joint_op(P), 'flex', shape, (shape[-2], shape[2], shape[2]), dtype, device='cuda')


def test_errors():
    win, extra, bias = _inputs(1, 2, 4, 2, 2, 4, True)
    with pytest.raises(ValueError, match='same shape'):
        window_extra_attention(win[0], win[1][:, :1], win[2], *extra)
    with pytest.raises(ValueError, match='q_extra'):
        window_extra_attention(*win, extra[0][:, :1], *extra[1:])
    with pytest.raises(ValueError, match='q_extra'):
        window_extra_attention(*win, extra[0], extra[1][:, :, :1], extra[2])
    with pytest.raises(ValueError, match='bias'):
        window_extra_attention(*win, *extra, bias=bias[:, :4, :4])
    with pytest.raises(ValueError, match='q_extra must match'):
        window_extra_attention(*win, extra[0].double(), *extra[1:])
    with pytest.raises(ValueError, match='unknown backend'):
        window_extra_attention(*win, *extra, backend='cuda')
