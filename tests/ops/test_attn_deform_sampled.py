"""Deformable sampled-key attention (DAT / DAT++): the reference against the definition and the
official ``DAttentionBaseline`` formulation, gradcheck, errors, and Triton parity (all gradients:
q, k, v, the sampling positions and the bias table)."""
import pytest
import torch
import torch.nn.functional as F

from attn_parity import check_backend_named
from densekit.ops.deform_sampled import deform_sampled_attention

ALIASES = {'dpos': 'dbias', 'dtable': 'dbias'}


def make_case(B, H, W, heads, D, N, groups, table_hw, dv=None, seed=0, dtype=torch.float32, spread=1.0):
    """Random inputs; positions spread a little beyond [-1, 1] so that the zero padding of the
    table is exercised when ``spread > 1``."""
    g = torch.Generator().manual_seed(seed)
    dv = dv or D
    return dict(
        q=torch.randn(B, H, W, heads, D, generator=g, dtype=dtype),
        k=torch.randn(B, N, heads, D, generator=g, dtype=dtype),
        v=torch.randn(B, N, heads, dv, generator=g, dtype=dtype),
        pos=(torch.rand(B, groups, N, 2, generator=g, dtype=dtype) * 2 - 1) * spread,
        table=torch.randn(heads, *table_hw, generator=g, dtype=dtype),
    ), torch.randn(B, H, W, heads, dv, generator=g, dtype=dtype)


def _bilinear_zero_pad(img, y, x):
    """Sample ``img [Th, Tw]`` at pixel coordinates ``(y, x)`` (any shape), zero outside, written
    from the definition of bilinear interpolation."""
    Th, Tw = img.shape
    y0, x0 = y.floor(), x.floor()
    out = torch.zeros_like(y)
    for dy in (0, 1):
        for dx in (0, 1):
            yy, xx = y0 + dy, x0 + dx
            w = (1 - (y - yy).abs()) * (1 - (x - xx).abs())
            ok = (yy >= 0) & (yy < Th) & (xx >= 0) & (xx < Tw)
            val = img[yy.clamp(0, Th - 1).long(), xx.clamp(0, Tw - 1).long()]
            out = out + torch.where(ok, w * val, torch.zeros_like(val))
    return out


def _naive(q, k, v, pos, table, scale):
    """The definition: the whole ``[B, heads, H * W, N]`` logits with an explicit bias."""
    B, H, W, h, D = q.shape
    N, G = k.shape[1], pos.shape[1]
    Th, Tw = table.shape[1:]
    ys = torch.arange(H, dtype=q.dtype) / max(H - 1, 1) * 2 - (1 if H > 1 else 0)
    xs = torch.arange(W, dtype=q.dtype) / max(W - 1, 1) * 2 - (1 if W > 1 else 0)
    qy, qx = (t.reshape(-1) for t in torch.meshgrid(ys, xs, indexing='ij'))
    logits = torch.einsum('bmhd,bnhd->bhmn', q.reshape(B, H * W, h, D), k) * scale
    bias = []
    for head in range(h):
        p = pos[:, head // (h // G)]  # B N 2
        ty = ((qy[None, :, None] - p[:, None, :, 0]) * 0.5 + 1) * 0.5 * (Th - 1)
        tx = ((qx[None, :, None] - p[:, None, :, 1]) * 0.5 + 1) * 0.5 * (Tw - 1)
        bias.append(_bilinear_zero_pad(table[head], ty, tx))
    attn = (logits + torch.stack(bias, 1)).softmax(-1)
    return torch.einsum('bhmn,bnhd->bmhd', attn, v).reshape(B, H, W, h, -1)


@pytest.mark.parametrize('args', [(2, 5, 7, 4, 3, 6, 2, (9, 13), 5), (1, 1, 6, 2, 4, 3, 1, (3, 5), None),
                                  (1, 4, 3, 3, 2, 1, 3, (1, 7), None)])
def test_reference_matches_definition(args):
    inputs, go = make_case(*args, dtype=torch.float64, spread=1.3)
    res = []
    for fn in (lambda **a: deform_sampled_attention(**a, scale=0.4, backend='reference'),
               lambda **a: _naive(**a, scale=0.4)):
        leaves = {n: t.clone().requires_grad_(True) for n, t in inputs.items()}
        out = fn(**leaves)
        out.backward(go)
        res.append([out.detach()] + [leaves[n].grad for n in ('q', 'k', 'v', 'table')])
    for a, e in zip(*res):
        torch.testing.assert_close(a, e, atol=1e-10, rtol=0)


def test_reference_matches_official_formulation():
    """``DAttentionBaseline.forward`` (use_pe, offset_range_factor < 0) from q onwards: heads
    split as ``(g c)``, the table expanded per group and sampled with ``grid_sample`` at
    ``(q_grid - pos) * 0.5`` in ``(x, y)`` order, logits ``einsum(q, k) * scale``."""
    torch.manual_seed(0)
    B, g, hg, hc, H, W, Hk, Wk = 2, 2, 2, 4, 6, 9, 2, 3
    h, C, Ns = g * hg, g * hg * hc, Hk * Wk
    q = torch.randn(B, C, H, W)
    k, v = torch.randn(B * h, hc, Ns), torch.randn(B * h, hc, Ns)
    pos = (torch.rand(B * g, Hk, Wk, 2) * 2.4 - 1.2).clamp(-1, 1)
    table = torch.randn(h, 2 * 7 - 1, 2 * 11 - 1)
    scale = hc ** -0.5
    qs = q.reshape(B * h, hc, H * W)
    attn = torch.einsum('b c m, b c n -> b m n', qs, k).mul(scale)
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing='ij')
    q_grid = torch.stack((ys.div(H - 1.0).mul(2).sub(1), xs.div(W - 1.0).mul(2).sub(1)), -1)
    q_grid = q_grid[None].expand(B * g, -1, -1, -1)
    disp = (q_grid.reshape(B * g, H * W, 2).unsqueeze(2) - pos.reshape(B * g, Ns, 2).unsqueeze(1)).mul(0.5)
    rpe = table[None].expand(B, -1, -1, -1).reshape(B * g, hg, *table.shape[1:])
    bias = F.grid_sample(rpe, disp[..., (1, 0)], mode='bilinear', align_corners=True)
    attn = (attn + bias.reshape(B * h, H * W, Ns)).softmax(2)
    expected = torch.einsum('b m n, b c n -> b c m', attn, v).reshape(B, C, H, W)

    got = deform_sampled_attention(
        q.reshape(B, h, hc, H, W).permute(0, 3, 4, 1, 2), k.reshape(B, h, hc, Ns).permute(0, 3, 1, 2),
        v.reshape(B, h, hc, Ns).permute(0, 3, 1, 2), pos.reshape(B, g, Ns, 2), table, scale=scale,
        backend='reference')
    torch.testing.assert_close(got.permute(0, 3, 4, 1, 2).reshape(B, C, H, W), expected, atol=1e-5, rtol=0)


def test_reference_chunked_rows_match_one_chunk(monkeypatch):
    import densekit.ops.deform_sampled.reference as ref
    inputs, _ = make_case(2, 6, 5, 2, 4, 7, 1, (5, 5))
    whole = deform_sampled_attention(**inputs, backend='reference')
    monkeypatch.setattr(ref, '_CHUNK_LOGITS', 2 * 2 * 7 * 4)  # 4 query rows per chunk
    torch.testing.assert_close(deform_sampled_attention(**inputs, backend='reference'), whole, atol=0, rtol=0)


def test_gradcheck_reference():
    inputs, _ = make_case(1, 2, 3, 2, 2, 3, 2, (5, 7), dv=3, dtype=torch.float64, spread=1.2)
    names = ('q', 'k', 'v', 'pos', 'table')
    leaves = [inputs[n].requires_grad_(True) for n in names]
    assert torch.autograd.gradcheck(
        lambda *a: deform_sampled_attention(**dict(zip(names, a)), backend='reference'), leaves)


def test_errors():
    inputs, _ = make_case(1, 4, 4, 4, 8, 5, 2, (7, 7))
    with pytest.raises(ValueError, match='not a multiple of the 3 offset groups'):
        deform_sampled_attention(**{**inputs, 'pos': torch.zeros(1, 3, 5, 2)})
    with pytest.raises(ValueError, match=r'pos must be \[B=1, groups, N=5, 2\]'):
        deform_sampled_attention(**{**inputs, 'pos': torch.zeros(1, 2, 4, 2)})
    with pytest.raises(ValueError, match=r'table must be \[heads=4, Th, Tw\]'):
        deform_sampled_attention(**{**inputs, 'table': torch.zeros(2, 7, 7)})
    with pytest.raises(ValueError, match='shapes do not match'):
        deform_sampled_attention(**{**inputs, 'k': inputs['k'][..., :4]})
    with pytest.raises(ValueError, match='unknown backend'):
        deform_sampled_attention(**inputs, backend='flex')


def _op(**kw):
    backend = kw.pop('backend')
    return deform_sampled_attention(**kw, backend=backend)


TRITON_CASES = [
    # (B, H, W, heads, D, N, groups, table, dv): query rows and keys that are not multiples of
    # the 32-row tiles, several key chunks, head dims that are not powers of two, values wider
    # than keys, heads shared by groups, a table narrower than the displacements (zero padding)
    (2, 5, 7, 4, 12, 37, 2, (13, 17), 20),
    (1, 3, 35, 2, 16, 7, 1, (5, 69), None),
    (1, 1, 5, 3, 8, 33, 3, (1, 3), None),
]


@pytest.mark.parametrize('case', TRITON_CASES)
def test_triton_parity_fp32(triton_interpreter, case):
    inputs, go = make_case(*case, spread=1.2)
    check_backend_named(_op, 'triton', inputs, go, torch.float32, ALIASES)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_triton_parity_low_precision(triton_interpreter, dtype):
    inputs, go = make_case(1, 5, 8, 2, 16, 19, 2, (9, 15))
    check_backend_named(_op, 'triton', inputs, go, dtype, ALIASES)


def test_triton_double_backward_is_an_error(triton_interpreter):
    inputs, _ = make_case(1, 2, 2, 1, 16, 3, 1, (3, 3))
    q = inputs['q'].requires_grad_(True)
    out = deform_sampled_attention(**inputs, backend='triton')
    (g,) = torch.autograd.grad(out.sum(), q, create_graph=True)
    with pytest.raises(RuntimeError, match='once_differentiable|does not require grad'):
        g.sum().backward()


@pytest.mark.gpu
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
@pytest.mark.parametrize('case', [
    # DAT++-T at 800x1333 (1x3x800x1344 after padding): stage 0 (200x336 queries, stride-8 keys
    # 25x42, 2 heads, 1 group, table 111x111) and stage 1 (100x168, 25x42, 4 heads, 2 groups)
    (1, 200, 336, 2, 32, 25 * 42, 1, (111, 111), None),
    (2, 100, 168, 4, 32, 25 * 42, 2, (55, 55), None),
    (2, 50, 84, 8, 32, 25 * 42, 4, (27, 27), None),
])
def test_cuda_parity(requires_cuda, dtype, case):
    inputs, go = make_case(*case)
    check_backend_named(_op, 'triton', inputs, go, dtype, ALIASES, device='cuda')
