"""Routed (BiFormer bi-level routing) attention: the reference against dense masked attention and
the official gather formulation, gradcheck, errors, and backend parity."""
import pytest
import torch

from attn_parity import TOL, check_backend, make_inputs
from densekit.ops.routed import routed_attention


def _random_index(B, R, topk, seed=0, device='cpu'):
    """Distinct region indices per row, as ``torch.topk`` returns them (in a random order)."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(R, generator=g)[:topk] for _ in range(B * R)]).view(B, R, topk).to(device)


def _naive_routed(q, k, v, index, regions, scale):
    """Dense attention over the whole map with a mask written from the definition: token (y, x)
    lies in region (y // (H/rh)) * rw + x // (W/rw); query region r sees the key regions in
    index[b, r]."""
    B, H, W, h, D = q.shape
    rh, rw = regions
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing='ij')
    reg = ((ys // (H // rh)) * rw + xs // (W // rw)).reshape(-1)
    allowed = torch.zeros(B, rh * rw, rh * rw, dtype=torch.bool)
    allowed.scatter_(2, index, True)
    mask = allowed[:, reg][:, :, reg]  # [B, HW, HW]
    qf, kf, vf = (t.reshape(B, H * W, h, -1).transpose(1, 2) for t in (q, k, v))
    logits = ((qf @ kf.transpose(-1, -2)) * scale).masked_fill(~mask[:, None], float('-inf'))
    return (logits.softmax(-1) @ vf).transpose(1, 2).reshape(B, H, W, h, -1)


@pytest.mark.parametrize('shape,dv,regions,topk', [((2, 6, 10, 2, 4), 3, (2, 5), 3), ((1, 9, 6, 3, 5), 5, 3, 1),
                                                   ((1, 4, 4, 1, 2), 2, 4, 16)])
def test_reference_matches_dense_masked_attention(shape, dv, regions, topk):
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(shape[:-1] + (dv,), generator=g, dtype=torch.float64)
    go = torch.randn(shape[:-1] + (dv,), generator=g, dtype=torch.float64)
    r = (regions, regions) if isinstance(regions, int) else regions
    index = _random_index(shape[0], r[0] * r[1], topk)
    res = []
    for fn in (lambda *a: routed_attention(*a, index, regions, scale=0.3, backend='reference'),
               lambda *a: _naive_routed(*a, index, r, 0.3)):
        leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
        out = fn(*leaves)
        out.backward(go)
        res.append([out.detach()] + [t.grad for t in leaves])
    for a, e in zip(*res):
        torch.testing.assert_close(a, e, atol=1e-12, rtol=0)


def test_reference_matches_official_gather_formulation():
    """BiFormer's bra_legacy: regions as ``(n j i) h w``, keys / values of the routed regions
    gathered in top-k order, heads split as ``(m c)``, logits ``(q * scale) @ k``."""
    torch.manual_seed(0)
    n, nw, h, w, m, c = 2, 3, 2, 4, 2, 8
    q, k, v = (torch.randn(n, nw * h, nw * w, m * c) for _ in range(3))
    q_win = q.view(n, nw, h, nw, w, m * c).mean((2, 4)).reshape(n, nw * nw, m * c)
    k_win = k.view(n, nw, h, nw, w, m * c).mean((2, 4)).reshape(n, nw * nw, m * c)
    idx = torch.topk(q_win @ k_win.transpose(-1, -2), k=4, dim=-1).indices
    scale = (m * c) ** -0.5

    def regions(t):  # n (j h) (i w) C -> n (j i) (h w) C
        return t.view(n, nw, h, nw, w, -1).permute(0, 1, 3, 2, 4, 5).reshape(n, nw * nw, h * w, -1)

    qr, kr, vr = regions(q), regions(k), regions(v)
    sel = lambda t: torch.stack([t[b][idx[b]] for b in range(n)])  # n p2 topk w2 C  # noqa: E731
    ks = sel(kr).reshape(n, nw * nw, 4 * h * w, m, c).permute(0, 1, 3, 4, 2)
    vs = sel(vr).reshape(n, nw * nw, 4 * h * w, m, c).permute(0, 1, 3, 2, 4)
    qh = qr.reshape(n, nw * nw, h * w, m, c).transpose(2, 3)
    out = ((qh * scale) @ ks).softmax(-1) @ vs  # n p2 m w2 c
    expected = out.permute(0, 1, 3, 2, 4).reshape(n, nw, nw, h, w, m * c).permute(0, 1, 3, 2, 4, 5)
    expected = expected.reshape(n, nw * h, nw * w, m * c)
    split = lambda t: t.view(n, nw * h, nw * w, m, c)  # noqa: E731
    got = routed_attention(split(q), split(k), split(v), idx, nw, scale=scale, backend='reference')
    torch.testing.assert_close(got.reshape(expected.shape), expected, atol=1e-5, rtol=0)


def test_reference_chunked_regions_match_one_chunk(monkeypatch):
    import densekit.ops.routed.reference as ref
    q, k, v, _, _ = make_inputs((2, 8, 12, 2, 4), None)
    index = _random_index(2, 4 * 6, 5)
    whole = routed_attention(q, k, v, index, (4, 6), backend='reference')
    monkeypatch.setattr(ref, '_CHUNK_LOGITS', 2 * 2 * 4 * 5 * 4 * 7)  # 7 regions per chunk
    torch.testing.assert_close(routed_attention(q, k, v, index, (4, 6), backend='reference'), whole,
                               atol=0, rtol=0)


def test_gradcheck_reference():
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(1, 4, 2, 2, 2, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    v = torch.randn(1, 4, 2, 2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    index = _random_index(1, 4, 2)
    assert torch.autograd.gradcheck(
        lambda q, k, v: routed_attention(q, k, v, index, (2, 2), backend='reference'), (q, k, v))


def test_errors():
    q = torch.randn(1, 8, 9, 2, 4)
    index = _random_index(1, 16, 2)
    with pytest.raises(ValueError, match=r'\(8, 9\) is not a multiple of the region grid \(4, 4\)'):
        routed_attention(q, q, q, index, 4)
    q = torch.randn(1, 8, 8, 2, 4)
    with pytest.raises(ValueError, match=r'index must be \[B=1, R=16'):
        routed_attention(q, q, q, index[:, :8], 4)
    with pytest.raises(ValueError, match='int64 or int32'):
        routed_attention(q, q, q, index.float(), 4)
    with pytest.raises(ValueError, match='shapes do not match'):
        routed_attention(q, q[..., :2], q, index, 4)
    with pytest.raises(ValueError, match='unknown backend'):
        routed_attention(q, q, q, index, 4, backend='cuda')


def _routed_op(index, regions):
    def op(q, k, v, bias, backend=None):
        return routed_attention(q, k, v, index.to(q.device), regions, backend=backend)
    return op


@pytest.mark.parametrize('shape,regions,topk', [((2, 12, 20, 2, 16), (3, 4), 4), ((1, 10, 14, 1, 16), (5, 7), 1)])
def test_flex_forward_on_cpu_matches_reference(shape, regions, topk):
    pytest.importorskip('torch.nn.attention.flex_attention')
    q, k, v, _, _ = make_inputs(shape, None)
    index = _random_index(shape[0], regions[0] * regions[1], topk)
    with torch.no_grad():
        ref = routed_attention(q, k, v, index, regions, backend='reference')
        out = routed_attention(q, k, v, index, regions, backend='flex')
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


TRITON_CASES = [
    # (shape, dv, regions, topk): regions of 1, 15 and 40 tokens (partial and several chunks),
    # head dims that are not powers of two, values narrower than keys
    ((2, 6, 10, 2, 16), 16, (2, 2), 3),
    ((1, 9, 15, 1, 12), 20, 3, 2),
    ((1, 4, 4, 2, 16), 8, 4, 5),
]


@pytest.mark.parametrize('shape,dv,regions,topk', TRITON_CASES)
def test_triton_parity_fp32(triton_interpreter, shape, dv, regions, topk):
    r = (regions, regions) if isinstance(regions, int) else regions
    index = _random_index(shape[0], r[0] * r[1], topk, seed=1)
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(shape, generator=g) for _ in range(2))
    v, go = (torch.randn(shape[:-1] + (dv,), generator=g) for _ in range(2))
    res = {}
    for backend in ('reference', 'triton'):
        leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
        out = routed_attention(*leaves, index, regions, backend=backend)
        out.backward(go)
        res[backend] = [out.detach()] + [t.grad for t in leaves]
    tol = TOL[torch.float32]
    for what, a, e in zip(('out', 'dq', 'dk', 'dv'), res['triton'], res['reference']):
        torch.testing.assert_close(a, e, atol=tol[what] * max(1.0, e.abs().max().item()), rtol=0,
                                   msg=lambda m, w=what: f'{w}: {m}')


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_triton_parity_low_precision(triton_interpreter, dtype):
    check_backend(_routed_op(_random_index(1, 4, 2), 2), 'triton', (1, 6, 10, 2, 16), None, dtype)


def test_invert_routing_groups_query_regions_by_key_region():
    pytest.importorskip('triton')
    from densekit.ops.routed.triton import invert_routing
    index = _random_index(2, 6, 3)
    inv, off = invert_routing(index, 6)
    for b in range(2):
        for kr in range(6):
            got = sorted(inv[b, off[b, kr]:off[b, kr + 1]].tolist())
            assert got == [r for r in range(6) if kr in index[b, r].tolist()]


def test_triton_double_backward_is_an_error(triton_interpreter):
    q = torch.randn(1, 4, 4, 1, 16, requires_grad=True)
    out = routed_attention(q, q, q, _random_index(1, 4, 2), 2, backend='triton')
    (g,) = torch.autograd.grad(out.sum(), q, create_graph=True)
    with pytest.raises(RuntimeError, match='once_differentiable|does not require grad'):
        g.sum().backward()


@pytest.mark.gpu
@pytest.mark.parametrize('backend', ['triton', 'flex'])
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
@pytest.mark.parametrize('shape,regions,topk', [((2, 52, 84, 2, 32), (4, 4), 4), ((1, 208, 336, 2, 32), 16, 1),
                                                ((2, 64, 96, 4, 32), 16, 4), ((2, 16, 32, 8, 32), 16, 16)])
def test_cuda_parity(requires_cuda, backend, dtype, shape, regions, topk):
    """BiFormer's stage shapes at 800x1333 / 16 regions (stage 0: 208x336, top-1; stage 2: 1x2
    regions, top-16) and smaller ones."""
    r = (regions, regions) if isinstance(regions, int) else regions
    check_backend(_routed_op(_random_index(shape[0], r[0] * r[1], topk), regions), backend, shape, None, dtype,
                  device='cuda')
