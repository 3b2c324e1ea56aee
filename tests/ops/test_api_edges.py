"""Edges of the public attention API (``densekit.ops``) found by auditing it as a user: input
validation (dtypes, devices, integer-like sizes), double backward, ``torch.compile`` without graph
breaks, and an empty batch. Numerics of each op live in ``test_attn_{neighborhood,window,halo}.py``."""
import numpy as np
import pytest
import torch

from densekit.ops import halo_attention, na1d, na2d, routed_attention, window_attention
from densekit.ops.neighborhood.reference import na_reference

OPS = {
    'na1d': lambda q, k, v, **kw: na1d(q.flatten(1, 2), k.flatten(1, 2), v.flatten(1, 2), 5, **kw),
    'na2d': lambda q, k, v, **kw: na2d(q, k, v, 3, dilation=2, **kw),
    'window': lambda q, k, v, **kw: window_attention(q, k, v, 4, 2, **kw),
    'halo': lambda q, k, v, **kw: halo_attention(q, k, v, 4, 1, **kw),
    # 2 x 2 regions, each routed to regions 0 and 1
    'routed': lambda q, k, v, **kw: routed_attention(q, k, v, torch.arange(2).repeat(q.shape[0], 4, 1), 2, **kw),
}
OP_NAMES = {'na1d': 'na1d', 'na2d': 'na2d', 'window': 'window_attention', 'halo': 'halo_attention',
            'routed': 'routed_attention'}


def _qkv(shape=(1, 8, 8, 2, 16), seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g).requires_grad_(requires_grad) for _ in range(3)]


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize('op', OPS)
def test_integer_inputs_are_an_error(op):
    """Integer q / k / v are refused: computed in float and cast back they would silently
    truncate to int64 (all zeros)."""
    q, k, v = (t.mul(4).long() for t in _qkv())
    with pytest.raises(ValueError, match=rf'{OP_NAMES[op]}: q, k, v must be floating point .*got torch.int64'):
        OPS[op](q, k, v)


@pytest.mark.parametrize('op', OPS)
def test_mixed_dtypes_and_devices_name_the_values(op):
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r'dtypes differ: torch.float32, torch.float16, torch.float32'):
        OPS[op](q, k.half(), v)
    with pytest.raises(ValueError, match=r'devices differ: cpu, cpu, meta'):
        OPS[op](q, k, v.to('meta'))


@pytest.mark.parametrize('op', OPS)
def test_zero_head_dim_is_an_error(op):
    q, k, v = (t[..., :0] for t in _qkv())
    with pytest.raises(ValueError, match='head_dim must be >= 1'):  # not a ZeroDivisionError in the default scale
        OPS[op](q, k, v)


def test_bias_on_another_device_is_an_error():
    """Every op checks its bias tensors' device and dtype (a meta rpb would otherwise be silently
    ignored: the output equals no bias)."""
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r'window_attention: rpb is on meta, q on cpu'):
        window_attention(q, k, v, 4, rpb=torch.zeros(2, 7, 7, device='meta'))
    with pytest.raises(ValueError, match=r'halo_attention: rel_w is on meta, q on cpu'):
        halo_attention(q, k, v, 4, 1, rel_w=torch.zeros(11, 16, device='meta'))
    with pytest.raises(ValueError, match=r'na2d: rpb is on meta, q on cpu'):
        na2d(q, k, v, 3, rpb=torch.zeros(2, 5, 5, device='meta'))
    with pytest.raises(ValueError, match=r'na2d: rpb must be floating point, got torch.int64'):
        na2d(q, k, v, 3, rpb=torch.zeros(2, 5, 5, dtype=torch.long))


def test_integer_like_sizes_are_accepted_and_floats_refused():
    """numpy / 0-d tensor ints (sizes computed in a config) are accepted as sizes; a float kernel
    size fails with a message naming it."""
    q, k, v = _qkv()
    expected = na2d(q, k, v, 3, 2)
    torch.testing.assert_close(na2d(q, k, v, np.int64(3), (np.int64(2), torch.tensor(2))), expected, atol=0, rtol=0)
    torch.testing.assert_close(window_attention(q, k, v, np.int64(4), np.int64(2)), window_attention(q, k, v, 4, 2),
                               atol=0, rtol=0)
    with pytest.raises(TypeError, match=r'kernel_size must be an int or a 2-tuple of ints, got 3.0'):
        na2d(q, k, v, 3.0)
    with pytest.raises(TypeError, match=r'window_size must be an int or a 2-tuple of ints, got 4.0'):
        window_attention(q, k, v, 4.0)
    with pytest.raises(TypeError, match=r'halo_attention: block_size must be an int, got 4.0'):
        halo_attention(q, k, v, 4.0, 1)  # not a TypeError from view() deep in the reference


def test_window_size_below_one_is_an_error():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r'window_size must be >= 1, got \(0, 0\)'):  # not a ZeroDivisionError
        window_attention(q, k, v, 0)
    with pytest.raises(ValueError, match=r'window_size must be >= 1, got \(4, -4\)'):
        window_attention(q, k, v, (4, -4))


@pytest.mark.parametrize('op', OPS)
def test_empty_batch(op):
    """B = 0 gives an empty output (na2d / na1d raised from a reshape with an ambiguous -1)."""
    q, k, v = (t[:0].requires_grad_(True) for t in _qkv())
    out = OPS[op](q, k, v)
    assert out.shape[0] == 0 and out.shape[-1] == 16
    out.sum().backward()
    assert q.grad.shape == q.shape and k.grad.shape == k.shape


# ---------------------------------------------------------------- double backward
def _grad_penalty(fn, q, k, v):
    """A gradient penalty (WGAN-GP / R1 style): the second backward runs through the first."""
    out = fn(q, k, v)
    gq, = torch.autograd.grad(out.square().sum(), q, create_graph=True)
    (gq.square().sum() + out.sum()).backward()


@pytest.mark.parametrize('op', ['na2d', 'window', 'halo', 'routed'])
def test_triton_double_backward_is_an_error(triton_interpreter, op):
    """The Triton backwards are not differentiable: a double backward (a gradient penalty) is an
    error, not a first gradient without a graph whose penalty term is silently dropped."""
    q, k, v = _qkv((1, 8, 8, 1, 16), requires_grad=True)
    with pytest.raises(RuntimeError, match='once_differentiable'):
        _grad_penalty(lambda q, k, v: OPS[op](q, k, v, backend='triton'), q, k, v)


def test_na_offsets_reference_double_backward_is_an_error():
    """Same for the memory-saving ``impl='offsets'`` reference (its own autograd.Function)."""
    q, k, v = _qkv((1, 5, 5, 1, 4), requires_grad=True)
    with pytest.raises(RuntimeError, match='once_differentiable'):
        _grad_penalty(lambda q, k, v: na_reference(q, k, v, (3, 3), (1, 1), None, 0.5, impl='offsets'), q, k, v)


# ---------------------------------------------------------------- torch.compile
@pytest.mark.parametrize('op', OPS)
def test_compile_fullgraph(op):
    """No graph break: the backend choice logs only in eager mode, as a ``logging`` call inside the
    traced region is something dynamo cannot trace (a break per call; ``fullgraph=True`` raises)."""
    torch._dynamo.reset()
    q, k, v = _qkv()
    compiled = torch.compile(lambda q, k, v: OPS[op](q, k, v), fullgraph=True, backend='eager')
    torch.testing.assert_close(compiled(q, k, v), OPS[op](q, k, v), atol=0, rtol=0)


# ---------------------------------------------------------------- dispatch
@pytest.mark.parametrize('op', ['na1d', 'window', 'halo', 'routed'])
def test_triton_refuses_batch_times_heads_past_the_grid_limit(triton_interpreter, op):
    """batch * heads > 65535 (grid axis 1): the probe refuses, so that automatic dispatch on CUDA
    falls back to flex / reference instead of failing in the launcher."""
    q = torch.zeros(1, 4, 4, 1, 16).expand(65536, -1, -1, -1, -1)  # nothing is computed
    with pytest.raises(RuntimeError, match=r"backend 'triton'.*batch \* heads = 65536 \* 1 = 65536 exceeds the "
                                           r'Triton grid limit 65535'):
        OPS[op](q, q, q, backend='triton')


@pytest.mark.parametrize('backend', ['triton', 'flex'])
@pytest.mark.parametrize('op', ['na2d', 'window', 'halo', 'routed'])
def test_fused_backends_refuse_a_scale_that_needs_a_gradient(triton_interpreter, op, backend):
    """A learnable tensor ``scale``: the reference differentiates it, the fused backends take a
    number and would silently return no gradient for it, so they refuse it."""
    q, k, v = _qkv((1, 8, 8, 1, 16))
    scale = torch.tensor(0.3, requires_grad=True)
    with pytest.raises(RuntimeError, match=rf"backend '{backend}'.*scale is a tensor that needs a gradient"):
        OPS[op](q, k, v, scale=scale, backend=backend)
    out = OPS[op](q, k, v, scale=scale)  # automatic: the reference
    out.sum().backward()
    assert scale.grad is not None and scale.grad.abs() > 0


def test_backend_must_be_a_string():
    q, k, v = _qkv()
    with pytest.raises(TypeError, match=r'na2d: backend must be a string or None, got 1'):  # not an AttributeError
        na2d(q, k, v, 3, backend=1)
