"""Gradient buffers of the Triton backends: one shared allocation for packed q / k / v views,
separate ones whenever sharing could alias (tested through the kernels in the interpreter)."""
import pytest
import torch

from densekit.ops import na2d, window_attention
from densekit.ops._buffers import grad_buffers

from attn_parity import TOL


def _storage(t):
    return t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()


def test_packed_views_share_one_buffer_of_the_packed_size():
    qkv = torch.empty(2, 5, 6, 3, 2, 8)
    q, k, v = qkv.unbind(3)
    dq, dk, dv = grad_buffers(q, k, v)
    assert _storage(dq) == _storage(dk) == _storage(dv)
    assert dq.untyped_storage().nbytes() == qkv.untyped_storage().nbytes()  # not 3x
    for g, t in zip((dq, dk, dv), (q, k, v)):
        assert g.shape == t.shape and g.stride() == t.stride()
    # writing each gradient leaves the others intact (the views tile the buffer)
    dq.fill_(1), dk.fill_(2), dv.fill_(3)
    assert (dq == 1).all() and (dk == 2).all() and (dv == 3).all()


@pytest.mark.parametrize('case', ['same tensor', 'separate tensors', 'unequal spacing'])
def test_anything_else_gets_separate_buffers(case):
    x = torch.empty(2, 5, 6, 2, 8)
    if case == 'same tensor':
        ts = (x, x, x)
    elif case == 'separate tensors':
        ts = (x, x.clone(), x.clone())
    else:
        base = torch.empty(2, 5, 6, 4, 2, 8)
        ts = (base[:, :, :, 0], base[:, :, :, 1], base[:, :, :, 3])
    gs = grad_buffers(*ts)
    assert len({g.untyped_storage().data_ptr() for g in gs}) == 3
    for g, t in zip(gs, ts):
        assert g.shape == t.shape and g.stride() == t.stride()


@pytest.mark.parametrize('op', ['na2d', 'window'])
def test_one_tensor_as_q_k_and_v(triton_interpreter, op):
    """q = k = v (one tensor): its gradient is the sum of three, never one overwriting another."""
    g = torch.Generator().manual_seed(5)
    x0 = torch.randn(1, 8, 8, 2, 16, generator=g)
    go = torch.randn(1, 8, 8, 2, 16, generator=g)
    grads = {}
    for backend in ('reference', 'triton'):
        x = x0.clone().requires_grad_(True)
        if op == 'na2d':
            y = na2d(x, x, x, 3, 2, backend=backend)
        else:
            y = window_attention(x, x, x, 4, shift=2, backend=backend)
        y.backward(go)
        grads[backend] = x.grad
    tol = TOL[torch.float32]  # x.grad = dq + dk + dv: the three tolerances add
    torch.testing.assert_close(grads['triton'], grads['reference'], atol=tol['dq'] + tol['dk'] + tol['dv'], rtol=0)


@pytest.mark.parametrize('min_programs,chunks', [(8, 1), (16, 2), (24, 3)])
def test_window_bias_gradient_summed_over_image_chunks(triton_interpreter, min_programs, chunks):
    """With a bias gradient the window backward sums dS over chunks of images; force one chunk of
    3 images, chunks of 2 + 1 (uneven) and 1 + 1 + 1, and compare every gradient with the reference."""
    from attn_parity import check_backend
    import densekit.ops.window.triton as wt
    config = dict(min_programs=min_programs)
    # 8x8 map, window 4, 2 heads: 4 windows x 2 heads = 8 programs per image
    assert wt._image_chunks(3, 8, config)[0] == chunks

    def op(q, k, v, rpb, backend=None):
        return window_attention(q, k, v, 4, 2, rpb=rpb, backend=backend, triton_config=config)
    check_backend(op, 'triton', (3, 8, 8, 2, 16), (2, 7, 7), torch.float32)


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_row_dot_matches_torch_on_strided_inputs(triton_interpreter, dtype):
    """delta = sum(dout * out, -1) in fp32 from a kernel (no full-size fp32 temporaries), for
    strided inputs: dout a permuted view, out a view into a packed tensor, D not a power of two."""
    from densekit.ops._triton_utils import row_dot
    g = torch.Generator().manual_seed(7)
    dout = torch.randn(2, 3, 5, 6, 2, 24, generator=g).to(dtype).permute(0, 2, 1, 3, 4, 5)[:, :, :, 1]  # [2, 5, 3, 2, 24]
    out = torch.randn(2, 5, 3, 3, 2, 24, generator=g).to(dtype)[:, :, :, 2]
    expected = (dout.double() * out.double()).sum(-1).reshape(2, 15, 2).float()
    torch.testing.assert_close(row_dot(dout, out), expected, atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize('op', ['na2d', 'window', 'halo'])
def test_expanded_inputs_get_summed_gradients(triton_interpreter, op):
    """Keys / values shared by the batch through ``expand`` (stride 0): written through those
    strides, every image's dK / dV would land in the one aliased element of a stride-0 buffer (NA
    and window: dk off by ~5), so the gradient must come from a dense copy and be summed over the
    batch by autograd."""
    from densekit.ops import halo_attention
    g = torch.Generator().manual_seed(11)
    q0 = torch.randn(2, 8, 8, 1, 16, generator=g)
    k0, v0 = (torch.randn(1, 8, 8, 1, 16, generator=g) for _ in range(2))
    go = torch.randn(2, 8, 8, 1, 16, generator=g)
    fns = {'na2d': lambda q, k, v, b: na2d(q, k, v, 3, backend=b),
           'window': lambda q, k, v, b: window_attention(q, k, v, 4, 2, backend=b),
           'halo': lambda q, k, v, b: halo_attention(q, k, v, 4, 1, backend=b)}
    res = {}
    for backend in ('reference', 'triton'):
        q, k, v = (t.clone().requires_grad_(True) for t in (q0, k0, v0))
        out = fns[op](q, k.expand(2, -1, -1, -1, -1), v.expand(2, -1, -1, -1, -1), backend)
        out.backward(go)
        res[backend] = {'out': out.detach(), 'dq': q.grad, 'dk': k.grad, 'dv': v.grad}
    tol = TOL[torch.float32]
    for what, exp in res['reference'].items():
        # dk / dv sum two images: two gradients' tolerances
        atol = tol[what] * (2 if what in ('dk', 'dv') else 1) * max(1.0, exp.abs().max().item())
        torch.testing.assert_close(res['triton'][what], exp, atol=atol, rtol=0, msg=lambda m, w=what: f'{w}: {m}')
