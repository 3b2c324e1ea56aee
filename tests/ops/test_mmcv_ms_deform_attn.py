"""Multi-scale deformable attention: mmcv's compiled-op interface served by densekit vs mmcv's
own pure-PyTorch fallback (mmcv's compiled build has no CPU kernel for this op)."""
import pytest
import torch

from mmcv_parity import assert_close, require_portable_ext
from densekit.ops.mmcv import ms_deform_attn as dk

SHAPES = [(7, 9), (4, 5), (1, 3)]  # odd sizes and a 1-pixel-high level


@pytest.fixture(autouse=True)
def _portable():
    require_portable_ext()


def _inputs(dtype=torch.float32, bs=2, nq=5, heads=3, dim=4, points=3):
    gen = torch.Generator().manual_seed(5)
    shapes = torch.tensor(SHAPES, dtype=torch.long)
    areas = shapes.prod(1)
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    value = torch.randn(bs, int(areas.sum()), heads, dim, generator=gen, dtype=dtype)
    # Locations slightly outside [0, 1] exercise the zero padding.
    loc = torch.rand(bs, nq, heads, len(SHAPES), points, 2, generator=gen, dtype=dtype) * 1.2
    loc = loc - 0.1
    attn = torch.rand(bs, nq, heads, len(SHAPES), points, generator=gen, dtype=dtype)
    attn = attn / attn.sum((-1, -2), keepdim=True)
    return value, shapes, starts, loc, attn


def test_ext_function_matches_mmcv_pytorch_fallback():
    from mmcv.ops.multi_scale_deform_attn import (MultiScaleDeformableAttnFunction,
                                                  multi_scale_deformable_attn_pytorch)
    value, shapes, starts, loc, attn = _inputs()
    a = [t.clone().requires_grad_(True) for t in (value, loc, attn)]
    b = [t.clone().requires_grad_(True) for t in (value, loc, attn)]
    out = MultiScaleDeformableAttnFunction.apply(a[0], shapes, starts, a[1], a[2], 64)
    ref = multi_scale_deformable_attn_pytorch(b[0], shapes, b[1], b[2])
    assert_close(out.detach(), ref.detach(), 'output')
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    out.backward(g)
    ref.backward(g)
    for name, x, y in zip(('value', 'sampling_locations', 'attention_weights'), a, b):
        assert_close(x.grad, y.grad, f'grad {name}')


def test_gradcheck_float64():
    value, shapes, starts, loc, attn = _inputs(torch.float64, bs=1, nq=2, heads=2, dim=2,
                                               points=2)
    ins = [t.requires_grad_(True) for t in (value, loc, attn)]
    assert torch.autograd.gradcheck(
        lambda v, l, w: dk.ms_deform_attn(v, shapes, starts, l, w), ins)
    # The explicit backward (mmcv's interface) returns the same gradients as autograd.
    g = torch.randn(1, 2, 4, dtype=torch.float64)
    grads = dk.ms_deform_attn_backward(value, shapes, starts, loc, attn, g)
    out = dk.ms_deform_attn(*[ins[0], shapes, starts, ins[1], ins[2]])
    auto = torch.autograd.grad(out, ins, g)
    for x, y in zip(grads, auto):
        assert_close(x, y, 'explicit vs autograd')


def test_deformable_detr_attention_module_forward_backward():
    """mmcv's MultiScaleDeformableAttention (as used by Deformable DETR) trains on CPU."""
    from mmcv.ops import MultiScaleDeformableAttention
    torch.manual_seed(0)
    embed, levels = 16, len(SHAPES)
    attn = MultiScaleDeformableAttention(embed_dims=embed, num_heads=2, num_levels=levels,
                                         num_points=2, batch_first=True)
    shapes = torch.tensor(SHAPES)
    areas = shapes.prod(1)
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    value = torch.randn(2, int(areas.sum()), embed, requires_grad=True)
    query = torch.randn(2, 6, embed, requires_grad=True)
    ref_pts = torch.rand(2, 6, levels, 2)
    out = attn(query, value=value, reference_points=ref_pts, spatial_shapes=shapes,
               level_start_index=starts)
    assert out.shape == (2, 6, embed)
    out.square().mean().backward()
    assert torch.isfinite(value.grad).all() and value.grad.abs().sum() > 0
    assert attn.sampling_offsets.weight.grad.abs().sum() > 0
